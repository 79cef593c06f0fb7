from typer.testing import CliRunner

import interp
from interp.cli import app


def test_cli_trace_writes_table_spec_and_figures(tmp_path):
    out = tmp_path / "t"
    result = CliRunner().invoke(app, ["trace", "--model", "tiny-llama", "--prompts", "test",
                                      "--templates", "1", "--limit", "3", "--samples", "2",
                                      "--kinds", "resid,mlp,attn,head", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Strongest sites" in result.output and "suggested MLP layers" in result.output
    for name in ("cells.csv", "prompts.json", "spec.json", "trace.html", "trace_prompt0.html"):
        assert (out / name).exists()
    again = interp.TraceResult.load(out)
    assert len(again.prompts) == 3 and again.spec["corruption"]["samples"] == 2
    bad = CliRunner().invoke(app, ["trace", "--model", "tiny-llama", "--kinds", "mlpp",
                                   "--limit", "1", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "not 'mlpp'" in bad.output


def test_cli_edit_verify_evaluate_and_export(tmp_path):
    out = tmp_path / "e"
    r = CliRunner().invoke(app, ["edit", "--model", "tiny-llama", "--templates", "1",
                                 "--layers", "0,1", "--out", str(out), "--verify"])
    assert r.exit_code == 0, r.output
    assert (out / "edit.safetensors").exists() and (out / "verification" / "eval_after").exists()
    assert "Suites before and after" in r.output
    r = CliRunner().invoke(app, ["evaluate", "--model", "tiny-llama", "--suites", "facts,definitional",
                                 "--edit", str(out / "edit.safetensors")])
    assert r.exit_code == 0, r.output
    assert "facts" in r.output and "kl" in r.output
    r = CliRunner().invoke(app, ["export", str(tmp_path / "m.gguf"), "--model", "tiny-llama",
                                 "--format", "gguf", "--edit", str(out / "edit.safetensors")])
    assert r.exit_code == 0, r.output
    assert "ok=True" in r.output and (tmp_path / "m.gguf").exists()
    bad = CliRunner().invoke(app, ["evaluate", "--model", "tiny-llama", "--suites", "nope"])
    assert bad.exit_code == 2 and "not 'nope'" in bad.output


def test_cli_demo_runs_the_whole_loop(tmp_path):
    r = CliRunner().invoke(app, ["demo", "--model", "tiny-llama", "--trace-prompts", "3",
                                 "--out", str(tmp_path / "d"), "--figures", str(tmp_path / "f")])
    assert r.exit_code == 0, r.output
    report = (tmp_path / "d" / "report.md").read_text()
    assert "Before and after" in report and "| occupations | abs_gap |" in report
    for name in ("trace_before.html", "trace_after.html", "trace_difference.html",
                 "bias_before_after.html"):
        assert (tmp_path / "f" / name).exists()
    assert (tmp_path / "d" / "export" / "hf" / "model.safetensors").exists()
    edit = interp.Edit.load(tmp_path / "d" / "edit.safetensors")
    assert edit.meta["site"] == "last" and edit.attn_layers and edit.layers
    assert interp.Edit.load(tmp_path / "d" / "paper_edit.safetensors").meta["site"] == "subject"
    # It leads with the bias where the edit was never fitted, the paper's edit beside it.
    lead = report.split("## Located")[0]
    assert "| two participants: mean \\|log-odds\\| |" in lead and "the paper's edit" in lead
    assert f"attention {edit.attn_layers}, because the pronoun is predicted" in report


def test_cli_edit_at_the_last_token_with_preserved_prompts(tmp_path):
    out = tmp_path / "e"
    r = CliRunner().invoke(app, ["edit", "--model", "tiny-llama", "--templates", "1",
                                 "--layers", "3", "--attn-layers", "2,3", "--site", "last",
                                 "--prefixes", "0", "--preserve",
                                 "definitional-train", "--preserve-weight", "0.1",
                                 "--out", str(out), "--verify"])
    assert r.exit_code == 0, r.output
    # The re-trace reads the MLP at the token the edit was fitted at.
    assert "MLP effect at the last token summed over edited layers" in r.output
    edit = interp.Edit.load(out / "edit.safetensors")
    assert edit.meta["site"] == "last" and edit.meta["preserve"]["weight"] == 0.1
    assert edit.layers == [3] and edit.attn_layers == [2, 3]
    assert set(edit.meta["preserve"]["subjects"]) <= set(
        interp.prompts.definitional(interp.model.load.bundled_tokenizer(), split="train").subjects())
    bad = CliRunner().invoke(app, ["edit", "--model", "tiny-llama", "--templates", "1",
                                   "--layers", "3", "--site", "middle", "--out", str(out)])
    assert bad.exit_code == 2 and "site must be one of" in bad.output


def test_cli_audit_two_models_and_bad_input(tmp_path):
    out = tmp_path / "a"
    r = CliRunner().invoke(app, ["audit", "--policy", "tiny-llama", "--reference", "tiny-gpt2",
                                 "--items", "misgendering", "--limit", "60", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "gap_B" in r.output and "misgendering_rate_policy" in r.output
    saved = interp.RewardAudit.load(out)
    assert len(saved.frame) == 60
    bad = CliRunner().invoke(app, ["audit", "--policy", "tiny-llama"])
    assert bad.exit_code == 2 and "--reference" in bad.output


def test_cli_device_and_dtype_options(tmp_path):
    """Where and in what precision the model loads, for every command; bad values are one line
    and exit code 2 before anything loads."""
    r = CliRunner().invoke(app, ["--dtype", "bf16", "info", "--model", "tiny-gemma3_text"])
    assert r.exit_code == 0, r.output
    assert "torch.bfloat16" in r.output and "normed before the stream" in r.output
    for args, message in ((["--dtype", "f8"], "--dtype must be one of f32, bf16, f16"),
                          (["--device", "meta"], "interp runs on cpu or cuda"),
                          (["--device", "nonsense"], "is not a device")):
        bad = CliRunner().invoke(app, [*args, "info", "--model", "tiny-llama"])
        assert bad.exit_code == 2 and message in bad.output, bad.output
        assert "Traceback" not in bad.output and "Model(" not in bad.output
