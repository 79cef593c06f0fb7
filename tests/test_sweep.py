"""Sweeps: the grid, the results table, resuming after a finished, deleted or crashed cell, and
clear configuration errors. Every run uses the tiny random Llama."""

import copy
import functools
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

import interp
import interp.locate.trace
import interp.mitigate.lsdm
from interp.sweep import (
    SweepConfigError,
    SweepResult,
    grid,
    read_config,
    run_sweep,
    toml_dumps,
)

REPO = Path(__file__).resolve().parents[1]

BASE = {
    "model": "tiny-llama",
    "seed": 0,
    "prompts": {
        "train": {"source": "professions", "split": "train", "templates": 2, "subjects": 3},
        "test": {"source": "professions", "split": "test", "templates": 1, "subjects": 3},
        "defs": {"source": "definitional", "templates": 1},
    },
    "trace": {"prompts": ["train"], "corruptions": ["noise"], "kinds": [["mlp", "attn"]],
              "windows": [1, 2], "samples": 1},
    "edit": {"prompts": "train", "eval": ["train", "test"], "definitional": "defs",
             "layers": [[0, 1]], "lam": [100.0, 1000.0],
             "suites": ["facts", "definitional", "declared"],
             "strict": False, "n_prefixes": 1, "prefix_len": 4, "stats_tokens": 1000},
}
N_TRACES, N_EDITS = 2, 2


def config(**changes) -> dict:
    """BASE with changes: {"trace.windows": [3]} sets a key, a value of None removes it."""
    cfg = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, key = path.split(".")
        table = cfg
        for p in parents:
            table = table[p]
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return cfg


class Calls:
    """Counts calls of the tracer and of LSDM, as the sweep makes them (the real functions
    still run);
    `fail_at` makes the n-th lsdm call raise instead, like a crash inside that cell."""

    def __init__(self, monkeypatch, fail_at=None, error=RuntimeError):
        self.trace = self.lsdm = 0
        self.fail_at, self.error = fail_at, error
        tracing, fitting = interp.locate.trace, interp.mitigate.lsdm
        monkeypatch.setattr(tracing, "trace", self._count("trace", tracing.trace))
        monkeypatch.setattr(fitting, "lsdm", self._count("lsdm", fitting.lsdm))

    def _count(self, name, fn):
        @functools.wraps(fn)  # keeps the signature: the config checks lsdm's keywords
        def wrapper(*args, **kwargs):
            setattr(self, name, getattr(self, name) + 1)
            if name == "lsdm" and self.lsdm == self.fail_at:
                raise self.error("simulated failure inside an edit cell")
            return fn(*args, **kwargs)

        return wrapper


def done_files(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("cells/*/done.json")}


@pytest.fixture(scope="module")
def finished(tiny_llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "run"
    return run_sweep(config(), out, model=tiny_llama, progress=False)


@pytest.fixture
def copied(finished, tmp_path):
    """A private copy of the finished sweep, to resume or damage."""
    out = tmp_path / "run"
    shutil.copytree(finished.out, out)
    return out


# ---------------------------------------------------------------------------------------------
# The grid


def test_grid_is_the_product_and_ids_are_stable():
    cfg = config(**{"trace.corruptions": ["noise", "swap"], "trace.windows": [1, 2, 3],
                    "edit.layers": [[0, 1], [2], [3]]})
    cells = grid(cfg)
    assert [c.kind for c in cells] == ["trace"] * 6 + ["edit"] * 6
    ids = [c.id for c in cells]
    assert len(set(ids)) == len(ids) and all(i.startswith(("trace-", "edit-")) for i in ids)
    assert [c.id for c in grid(copy.deepcopy(cfg))] == ids  # same config, same ids
    # Spellings of the same cell agree; a change of one axis value changes only its cells.
    same = config(**{"trace.corruptions": ["noise", "swap"], "trace.windows": [1, 2, 3],
                     "edit.layers": [[1, 0], [2], [3]], "edit.lam": [100, 1000],
                     "prompts.train.templates": ["The {} said that",
                                                 "The {} was promoted because"]})
    assert [c.id for c in grid(same)] == ids
    other = grid(config(**{"trace.corruptions": ["noise", "swap"], "trace.windows": [1, 2, 3],
                           "edit.layers": [[0, 1], [2], [3]], "edit.lam": [100.0, 500.0]}))
    assert [c.id for c in other[:6]] == ids[:6]
    assert sum(c.id in ids for c in other[6:]) == 3  # the λ = 100 edits
    # A swap cell does not depend on the number of noise samples.
    resampled = grid(config(**{"trace.corruptions": ["noise", "swap"],
                               "trace.windows": [1, 2, 3], "trace.samples": 5}))
    assert [c.id for c in resampled[3:6]] == ids[3:6] and resampled[0].id != ids[0]


def test_in_repo_configs_are_valid():
    assert len(grid(REPO / "configs" / "sweep_example.toml")) == 4 + 4
    assert len(grid(REPO / "configs" / "sweep_tiny.toml")) == 4 + 4


def test_a_config_dict_is_saved_as_equivalent_toml(finished):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    assert tomllib.loads((finished.out / "config.toml").read_text()) == config()
    odd = {"a b": "quote \" and \\ and é", "x": [1.5, True, [1, 2]], "t": {"u": {"v": 1}}}
    assert tomllib.loads(toml_dumps(odd)) == odd


# ---------------------------------------------------------------------------------------------
# A run and its table


def test_run_writes_one_row_per_cell(finished, tiny_llama):
    out = finished.out
    frame = pd.read_csv(out / "results.csv")
    cells = grid(config(), "tiny-llama")
    assert frame["cell"].tolist() == [c.id for c in cells]
    assert frame["type"].tolist() == ["trace"] * N_TRACES + ["edit"] * N_EDITS
    assert (frame["status"] == "done").all()
    traces, edits = frame[frame.type == "trace"], frame[frame.type == "edit"]
    assert traces["window"].tolist() == [1, 2] and set(traces["corruption"]) == {"noise"}
    assert traces[["top_effect", "mlp_peak_layer", "attn_peak_layer"]].notna().all().all()
    assert edits["lam"].tolist() == [100.0, 1000.0] and set(edits["layers"]) == {"0,1"}
    for column in ["train_abs_gap_before", "train_abs_gap_after", "train_abs_gap_change",
                   "test_abs_logodds_before", "test_abs_logodds_after",
                   "test_abs_logodds_change", "definitional_acc_before",
                   "definitional_acc_after", "facts_acc_after", "misgendered_binary_before",
                   "misgendered_tgnb_after"]:
        assert edits[column].notna().all(), column
    declared = interp.evaluate(tiny_llama, ["declared"], progress=False).frame
    for group in ("binary", "tgnb"):  # the same rate `interp.evaluate` reports
        want = declared.loc[declared.metric == f"misgendered_{group}", "value"].item()
        assert edits[f"misgendered_{group}_before"].tolist() == pytest.approx([want] * 2)
    baseline = json.loads((out / "baseline.json").read_text())["metrics"]
    assert (edits["train_abs_logodds_before"] == baseline["train_abs_logodds"]).all()
    for cell in cells:  # artefacts beside each done.json
        d = out / "cells" / cell.id
        assert json.loads((d / "done.json").read_text())["params"] == cell.params
        if cell.kind == "trace":
            assert interp.TraceResult.load(d / "trace").spec["window"] == cell.params["window"]
        else:
            assert interp.Edit.load(d / "edit.safetensors").layers == [0, 1]
            assert (d / "bias" / "summary.csv").is_file()
            assert (d / "capability" / "table.csv").is_file()
    loaded = SweepResult.load(out)
    assert loaded.frame["cell"].tolist() == frame["cell"].tolist()
    text = loaded.summary()
    assert "4 cells finished (2 traces, 2 edits)" in text and cells[-1].id in text


# ---------------------------------------------------------------------------------------------
# Resuming


def test_rerun_skips_every_finished_cell(copied, tiny_llama, monkeypatch):
    before = done_files(copied)
    calls = Calls(monkeypatch)
    result = run_sweep(config(), copied, model=tiny_llama, progress=False)
    assert (calls.trace, calls.lsdm) == (0, 0)
    assert done_files(copied) == before and len(result.frame) == N_TRACES + N_EDITS


def test_a_cell_without_done_json_is_recomputed(copied, tiny_llama, monkeypatch):
    edit_id = grid(config(), "tiny-llama")[-1].id
    (copied / "cells" / edit_id / "done.json").unlink()
    (copied / "cells" / edit_id / "half-written.tmp").write_text("from a killed run")
    frame = pd.read_csv(copied / "results.csv")
    calls = Calls(monkeypatch)
    result = run_sweep(config(), copied, model=tiny_llama, progress=False)
    assert (calls.trace, calls.lsdm) == (0, 1)
    assert not (copied / "cells" / edit_id / "half-written.tmp").exists()
    pd.testing.assert_frame_equal(pd.read_csv(copied / "results.csv")
                                  .drop(columns=["seconds"]), frame.drop(columns=["seconds"]))
    assert len(result.frame) == N_TRACES + N_EDITS


def test_cells_of_other_weights_are_recomputed(copied, tiny_llama, monkeypatch):
    trace_id = grid(config(), "tiny-llama")[0].id
    path = copied / "cells" / trace_id / "done.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "fingerprint": "other"}))
    calls = Calls(monkeypatch)
    with pytest.warns(UserWarning, match="other weights"):
        run_sweep(config(), copied, model=tiny_llama, progress=False)
    assert (calls.trace, calls.lsdm) == (1, 0)


def test_a_crash_keeps_finished_cells_and_a_rerun_finishes(tiny_llama, tmp_path, monkeypatch):
    out = tmp_path / "run"
    Calls(monkeypatch, fail_at=2)  # the second edit cell dies
    with pytest.raises(RuntimeError, match="simulated"):
        run_sweep(config(), out, model=tiny_llama, progress=False)
    cells = grid(config(), "tiny-llama")
    assert set(done_files(out)) == {c.id for c in cells[:-1]}
    assert not (out / "cells" / cells[-1].id / "done.json").exists()
    assert pd.read_csv(out / "results.csv")["cell"].tolist() == [c.id for c in cells[:-1]]
    monkeypatch.undo()
    calls = Calls(monkeypatch)
    result = run_sweep(config(), out, model=tiny_llama, progress=False)
    assert (calls.trace, calls.lsdm) == (0, 1)
    assert result.frame["cell"].tolist() == [c.id for c in cells]
    assert (result.frame["status"] == "done").all()


def test_a_method_error_is_a_failed_cell_not_a_crash(tiny_llama, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = config(trace=None)
    Calls(monkeypatch, fail_at=1, error=interp.EditError)
    result = run_sweep(cfg, out, model=tiny_llama, progress=False)
    assert result.frame["status"].tolist() == ["failed", "done"]
    assert "simulated failure" in result.frame["error"].iloc[0]
    assert "Failed cells" in result.summary()
    monkeypatch.undo()
    calls = Calls(monkeypatch)
    run_sweep(cfg, out, model=tiny_llama, progress=False)  # recorded, so not retried
    assert calls.lsdm == 0


def test_the_in_repo_tiny_config_runs(tiny_llama, tmp_path):
    result = run_sweep(REPO / "configs" / "sweep_tiny.toml", tmp_path / "tiny", model=tiny_llama,
                       progress=False)
    f = result.frame
    assert len(f) == 8 and (f["status"] == "done").all()
    assert f.loc[f.type == "edit", ["kl_after", "perplexity_after"]].notna().all().all()
    # KL against the unedited model: the first edit cell too (its reference was once itself)
    assert (f.loc[f.type == "edit", "kl_after"] > 0).all()
    swaps = f[f.corruption == "swap"]
    assert (swaps["n_prompts"] > 0).all()  # multi-token subjects are left out of swaps, counted
    assert (result.out / "config.toml").read_text() == \
        (REPO / "configs" / "sweep_tiny.toml").read_text()


# ---------------------------------------------------------------------------------------------
# Configuration errors


@pytest.mark.parametrize("changes, message", [
    ({"bogus": 1}, r"unknown key\(s\) \['bogus'\] in the top level"),
    ({"trace.window": [1]}, r"unknown key\(s\) \['window'\] in \[trace\]"),
    ({"trace.windows": "1"}, r"trace.windows must be positive integers, not '1' \(a string"),
    ({"seed": True}, r"seed must be an integer, not True \(a boolean\)"),
    ({"trace.prompts": ["nope"]}, r"'nope', which is not defined: add a \[prompts.nope\] table"),
    ({"edit.eval": ["train", "tset"]}, r"edit.eval names the prompt set 'tset'"),
    ({"edit.lam": []}, r"edit.lam is empty, so the grid would have no cells"),
    ({"trace.kinds": [[]]}, r"trace.kinds has an empty list"),
    ({"trace.kinds": ["mlp", "attn"]}, r'kinds must be a list of lists .* \[\["mlp", "attn"\]\]'),
    ({"edit.layers": [0, 1]}, r"edit.layers must be a list of lists"),
    ({"edit.layers": None}, r"edit.layers is missing"),
    ({"trace.corruptions": ["blur"]}, r"corruptions entry is 'blur'; use one of noise, swap"),
    ({"trace.kinds": [["mlp", "heads"]]}, r"trace.kinds entry is 'heads'"),
    ({"edit.stepz": 3}, r"unknown key\(s\) \['stepz'\] in \[edit\] .*interp.lsdm"),
    ({"edit.seed": 3}, r"'seed'.*top-level seed"),
    ({"prompts.train.source": "nope"}, r"\[prompts.train\] source is 'nope'; use one of"),
    ({"prompts.train.templates": 99}, r"\[prompts.train\] templates must be 1..18"),
    ({"prompts.defs.split": "train"}, r"\[prompts.defs\] split applies only to source"),
    ({"prompts.train.subjects": 0}, r"\[prompts.train\] subjects must be a positive integer"),
    ({"edit.heldout_tokens": 1}, r"edit.heldout_tokens must be a token count >= 2"),
    ({"trace": None, "edit": None}, r"nothing to run"),
    ({"prompts": {}}, r"no prompt sets"),
    ({"trace.contrast": "astrology"}, r"trace.contrast: unknown contrast 'astrology'"),
    ({"trace.contrast": "religion", "trace.metric": "gap"}, r"a contrast sets the metric"),
    ({"prompts.train": {"source": "contrast"}}, r"\[prompts.train\] contrast must be a built-in"),
    ({"prompts.train.contrast": "race"}, r"contrast applies only to source = \"contrast\""),
])
def test_config_errors_name_the_key_and_what_it_expects(changes, message):
    with pytest.raises(SweepConfigError, match=message):
        read_config(config(**changes))


def test_a_contrast_sweep_traces_its_lean_and_measures_its_edit(tiny_llama, tmp_path):
    cfg = {"model": "tiny-llama",
           "prompts": {"rel": {"source": "contrast", "contrast": "religion", "limit": 6},
                       "held": {"source": "contrast", "contrast": "religion", "split": "test",
                                "limit": 6}},
           "trace": {"prompts": ["rel"], "kinds": [["mlp"]], "samples": 1,
                     "contrast": "religion"},
           "edit": {"prompts": "rel", "eval": ["held"], "layers": [[1, 2]], "lam": [0.1],
                    "contrast": "religion", "tol": 0.001, "stats_tokens": 1500,
                    "suites": ["facts"]}}
    f = run_sweep(cfg, tmp_path / "out", model=tiny_llama, progress=False).frame
    trace = f[f.type == "trace"].iloc[0]
    assert trace["contrast"] == "religion" and trace["status"] == "done"
    edit = f[f.type == "edit"].iloc[0]
    assert edit["status"] == "done" and edit["held_abs_lean_after"] != edit[
        "held_abs_lean_before"]
    assert "held_abs_logodds_before" not in f.columns


def test_file_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("model = \n")
    with pytest.raises(SweepConfigError, match="bad.toml is not valid TOML"):
        read_config(bad)
    with pytest.raises(SweepConfigError, match="no sweep config at"):
        read_config(tmp_path / "missing.toml")
    with pytest.raises(SweepConfigError, match="no output directory"):
        run_sweep(config())
    with pytest.raises(interp.InterpError, match="no sweep results"):
        SweepResult.load(tmp_path)


def test_grid_values_the_model_cannot_take_fail_before_any_cell(tiny_llama, tmp_path):
    with pytest.raises(SweepConfigError, match=r"edit.layers has layer 9, but tiny-llama has "
                                               r"layers 0..3"):
        run_sweep(config(**{"edit.layers": [[0, 9]]}), tmp_path, model=tiny_llama,
                  progress=False)
    with pytest.raises(SweepConfigError, match="trace.windows has 7"):
        run_sweep(config(**{"trace.windows": [7]}), tmp_path, model=tiny_llama, progress=False)
    assert not (tmp_path / "cells").exists()
