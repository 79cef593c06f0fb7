"""Every command refuses bad input in one line, with exit code 2 and no traceback, before it
loads a model or computes anything. "No model loaded" is measured: every transformers model's
constructor is watched while the command runs."""

import json
import subprocess
import sys

import pytest
import torch
import transformers

import interp
from interp.cli import run
from interp.mitigate.alignez import RepresentationEdit
from interp.mitigate.edit import Edit

CASES = [
    # (command line, what the one line must name); {d} is the folder of bad files
    ("info -m tiny-foo", "tiny-foo"),
    ("info -m {d}/missing.gguf", "missing.gguf"),
    ("info -m {d}/garbage.gguf", "garbage.gguf"),
    ("info -m {d}/unknown_family", "not supported"),
    ("--dtype f8 info", "--dtype"),
    ("--device tpu info", "--device"),
    ("bias --prompts {d}/missing.jsonl", "missing.jsonl"),
    ("bias --prompts trian", "trian"),
    ("bias --templates 0", "--templates"),
    ("bias --contrast relgion", "relgion"),
    ("bias --contrast {d}/malformed.toml", "malformed.toml"),
    ("bias --contrast {d}/columns.jsonl", "columns.jsonl"),
    ("contrasts --bogus", "--bogus"),
    ("trace --prompts {d}/missing.jsonl", "missing.jsonl"),
    ("trace --prompts {d}/empty.jsonl", "empty.jsonl"),
    ("trace --prompts {d}/malformed.jsonl", "malformed.jsonl:2"),
    ("trace --prompts {d}/columns.jsonl", "'subject'"),
    ("trace --prompts train,test", "one prompt set"),
    ("trace --kinds mlpp", "mlpp"),
    ("trace --corruption blur", "blur"),
    ("trace --window 99", "--window"),
    ("trace --contrast relgion", "relgion"),
    ("trace --contrast religion --metric gap", "--metric gap and --contrast"),
    ("trace --contrast religion --prompts {d}/missing.jsonl", "missing.jsonl"),
    ("atlas --contrasts gender,relgion", "relgion"),
    ("atlas --prompts 0", "--prompts"),
    ("edit --contrast {d}/malformed.toml", "malformed.toml"),
    ("debias --contrast religion --recipe lsdm-strength", "does not take a contrast"),
    ("debias --contrast misgendering --recipe cda", "does not ask"),
    ("trace --samples 0", "--samples"),
    ("trace --bogus", "--bogus"),
    ("evaluate --edit {d}/garbage.safetensors", "garbage.safetensors"),
    ("evaluate --edit {d}/missing.safetensors", "missing.safetensors"),
    ("evaluate --edit {d}/other_model.safetensors", "tiny-llama"),
    ("evaluate --edit {d}/representation.safetensors", "representation edit"),
    ("evaluate --crows-pairs {d}/missing.csv", "missing.csv"),
    ("evaluate --crows-pairs {d}/columns.csv", "columns.csv"),
    ("evaluate --winobias {d}/columns.csv", "columns.csv"),
    ("evaluate --winogender {d}/empty.csv", "empty.csv"),
    ("evaluate --stereoset {d}/malformed.json", "malformed.json"),
    ("evaluate --suites occupations,nope", "nope"),
    ("audit --edit {d}/garbage.safetensors", "garbage.safetensors"),
    ("audit --items {d}/columns.csv --edit {d}/edit.safetensors", "columns.csv"),
    ("audit --items {d}/empty.csv --tango --edit {d}/edit.safetensors", "empty.csv"),
    ("audit --items {d}/missing.csv --edit {d}/edit.safetensors", "missing.csv"),
    ("audit --items disclosure", "--reference"),
    ("audit --edit {d}/edit.safetensors --beta 0", "--beta"),
    ("stories --pairs {d}/missing.json", "missing.json"),
    ("stories --pairs {d}/malformed.json", "malformed.json"),
    ("stories --split nope", "--split"),
    ("stories --edit {d}/other_model.safetensors", "tiny-llama"),
    ("dpo --preferences {d}/columns.csv", "columns.csv"),
    ("dpo --layers 99", "layer 99"),
    ("dpo --pairs {d}/missing.json", "missing.json"),
    ("persona --items {d}/malformed.jsonl", "malformed.jsonl"),
    ("persona --items {d}/missing.jsonl", "missing.jsonl"),
    ("persona --edit {d}/garbage.safetensors", "garbage.safetensors"),
    ("alignez --layers 99", "layer 99"),
    ("alignez --layers 3 --site nope", "--site"),
    ("alignez --layers 3 --items {d}/columns.jsonl", "columns.jsonl"),
    ("corpus count {d}/missing.txt", "missing.txt"),
    ("corpus count {d}/missing.txt --window ten", "--window"),
    ("corpus compare {d}/missing.csv", "missing.csv"),
    ("corpus compare {d}/columns.csv", "columns.csv"),
    ("edit --layers 99", "layer 99"),
    ("edit --layers 3 --attn-layers x", "'x'"),
    ("edit --prompts {d}/malformed.jsonl", "malformed.jsonl:2"),
    ("edit --site middle", "middle"),
    ("edit -m {d}/unknown_family", "not supported"),
    ("debias --recipe best", "best"),
    ("debias --steps 0", "--steps"),
    ("debias --lr -1", "--lr"),
    ("debias -m tiny-foo", "tiny-foo"),
    ("export {d}/out --edit {d}/garbage.safetensors", "garbage.safetensors"),
    ("export {d}/out --edit {d}/other_model.safetensors", "tiny-llama"),
    ("export {d}/out --format onnx", "onnx"),
    ("export {d}/out.gguf --format gguf -m tiny-gpt2", "gpt2"),
    ("export {d}/out --dtype q8_0", "q8_0"),
    ("sweep {d}/missing.toml", "missing.toml"),
    ("sweep {d}/unknown_key.toml", "bogus"),
    ("sweep {d}/layer.toml", "edit.layers"),
    ("sweep {d}/malformed.toml", "not valid TOML"),
    ("demo -m tiny-foo", "tiny-foo"),
    ("demo --trace-prompts 0", "--trace-prompts"),
]

COMMANDS = {"info", "bias", "contrasts", "trace", "atlas", "evaluate", "audit", "stories", "dpo", "persona", "alignez",
            "corpus", "edit", "debias", "export", "sweep", "demo"}


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.jsonl").write_text("")
    (d / "empty.csv").write_text("")
    (d / "malformed.jsonl").write_text('{"text": "The nurse said that", "subject": "nurse"}\n'
                                       '{"text": "The cook said that", "subject": \n')
    (d / "columns.jsonl").write_text('{"text": "The nurse said that"}\n')
    (d / "columns.csv").write_text("a,b\n1,2\n")
    (d / "malformed.json").write_text('[{"male_story": "He lied.",')
    (d / "garbage.safetensors").write_bytes(bytes(range(256)) * 4)
    (d / "garbage.gguf").write_bytes(b"GGUF\x03\x00\x00\x00\x01")
    (d / "unknown_family").mkdir()
    (d / "unknown_family" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    # An edit made for another model (tiny-llama's widths: d_model 64, d_mlp 128), and one for
    # the bundled model's widths (d_model 576, d_mlp 1536) that commands accept up to the load.
    g = torch.Generator().manual_seed(0)
    Edit({1: (torch.randn(64, 2, generator=g), torch.randn(128, 2, generator=g))},
         {"model": "tiny-llama", "fingerprint": "0" * 64}).save(d / "other_model.safetensors")
    Edit({1: (torch.randn(576, 2, generator=g), torch.randn(1536, 2, generator=g))},
         {"model": "smollm2-135m-instruct"}).save(d / "edit.safetensors")
    RepresentationEdit({1: (torch.randn(576, 1, generator=g), torch.randn(576, generator=g))},
                       1.0, 0.0, "resid", {}).save(d / "representation.safetensors")
    (d / "unknown_key.toml").write_text('model = "tiny-llama"\nbogus = 1\n[trace]\n')
    (d / "malformed.toml").write_text('model = "tiny-llama\n')
    (d / "layer.toml").write_text(f'model = "tiny-llama"\nout = "{d}/sweep"\n'
                                  '[prompts.train]\nsource = "professions"\nsplit = "train"\n'
                                  '[edit]\nprompts = "train"\neval = "train"\n'
                                  'layers = [[99]]\nlam = [1.0]\n')
    return d


@pytest.fixture
def loads(monkeypatch):
    """Every transformers model built while the test runs (tiny random ones included)."""
    built = []
    init = transformers.PreTrainedModel.__init__

    def watched(self, *args, **kw):
        built.append(type(self).__name__)
        init(self, *args, **kw)

    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", watched)
    return built


def test_the_table_covers_every_command():
    from interp.cli import app

    import typer

    names = {c.name for c in typer.main.get_command(app).commands.values()}
    assert names == COMMANDS
    assert {c.split()[0] if not c.startswith("--") else c.split()[2] for c, _ in CASES} == COMMANDS


@pytest.mark.parametrize("line,names", CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_refused_in_one_line_before_any_model_loads(line, names, bad, loads,
                                                                 capsys):
    code = run(line.format(d=bad).split())
    out, err = capsys.readouterr()
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert names in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert loads == [], f"a model was built before the refusal: {loads}"


def test_an_edit_for_other_weights_of_the_same_shape_is_refused_before_compute(bad, capsys):
    # tiny-mistral has tiny-llama's shapes: only the fingerprint, read after the load, tells
    # them apart; the refusal still comes before any forward pass.
    e = Edit({1: (torch.zeros(64, 1), torch.zeros(128, 1))},
             {"model": "tiny-llama", "fingerprint": "f" * 64})
    e.save(bad / "same_shape.safetensors")
    code = run(["stories", "-m", "tiny-mistral", "--edit", str(bad / "same_shape.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "fingerprint" in err, err


def test_internal_errors_are_one_line_unless_debug(monkeypatch, capsys):
    import interp.cli.measure as commands

    def broken(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(commands, "version_report", broken)
    assert run(["info", "--versions"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RuntimeError: boom" in err and "--debug" in err
    with pytest.raises(RuntimeError):
        run(["--debug", "info", "--versions"])


def test_debug_shows_the_traceback_of_bad_input_too(bad, loads):
    # without --debug the same line is one line and exit 2 (the table above); with it, the
    # error itself, raised where the check found it
    with pytest.raises(interp.InterpError, match="malformed.jsonl"):
        run(["--debug", "trace", "--prompts", f"{bad}/malformed.jsonl"])
    with pytest.raises(interp.InterpError, match="--kinds"):
        run(["--debug", "trace", "-m", "tiny-llama", "--kinds", "mlpp"])
    assert not loads


def test_the_console_script_exits_2_with_one_line(bad):
    # The installed entry point, in a fresh process: exit code and stderr as a user sees them.
    for line in (f"trace --prompts {bad}/malformed.jsonl", f"export {bad}/o --format onnx"):
        r = subprocess.run([sys.executable, "-m", "interp.cli", *line.split()],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
