"""Artefacts saved before the package moved into stage folders still load and mean the same.

tests/data/artefacts-0.1 was written by the flat-layout code (see its README); each test reads
one kind with today's code."""

import functools
import json
import shutil
from pathlib import Path

import torch

import interp
import interp.locate.trace
import interp.mitigate.lsdm

OLD = Path(__file__).parent / "data" / "artefacts-0.1"


def test_an_old_trace_result_loads_with_its_spec_and_views():
    r = interp.TraceResult.load(OLD / "trace")
    assert r.spec["kinds"] == ["mlp", "attn"] and r.spec["corruption"]["type"] == "noise"
    assert len(r.prompts) == 3 and set(r.frame["kind"]) == {"mlp", "attn"}
    assert r.suggest_layers("mlp", width=2) and not r.grouped().empty
    assert r.plot() is not None


def test_an_old_edit_applies_to_the_model_it_was_fitted_on_and_reverts(tiny_llama):
    edit = interp.Edit.load(OLD / "edit.safetensors")
    assert edit.layers == [0, 1] and edit.meta["method"] == "lsdm"
    before = tiny_llama.fingerprint()
    assert edit.meta["fingerprint"] == before  # the same tiny model, so it may be applied
    w = tiny_llama.arch.mlp_down_weight(tiny_llama.bridge, 0)
    original = w.detach().clone()
    with edit.applied(tiny_llama):
        assert torch.allclose(w.double() - original.double(), edit.delta(0), atol=1e-5)
    assert tiny_llama.fingerprint() == before


def test_an_old_verification_loads_with_both_traces_and_reports():
    v = interp.Verification.load(OLD / "verification")
    assert v.edit_meta["layers"] == [0, 1]
    assert {"definitional", "facts"} <= set(v.before.frame["suite"])
    assert not v.comparison.frame.empty and not v.sites().empty


def test_an_old_sweep_loads_and_resumes_with_nothing_to_compute(tiny_llama, tmp_path,
                                                                monkeypatch):
    old = interp.SweepResult.load(OLD / "sweep")
    assert sorted(old.frame["type"]) == ["edit", "trace"] and set(old.frame["status"]) == {"done"}

    calls = []
    for module, name in ((interp.locate.trace, "trace"), (interp.mitigate.lsdm, "lsdm")):
        # the stand-in keeps the signature: the config check reads lsdm's keywords from it
        stub = functools.wraps(getattr(module, name))(lambda *a, _n=name, **k: calls.append(_n))
        monkeypatch.setattr(module, name, stub)
    out = tmp_path / "sweep"
    shutil.copytree(OLD / "sweep", out)
    done = {p: p.read_text() for p in out.glob("cells/*/done.json")}
    again = interp.run_sweep(out / "config.toml", out, model=tiny_llama, progress=False)
    assert calls == []  # every cell's id is the same as when it was written
    assert {p: p.read_text() for p in out.glob("cells/*/done.json")} == done
    assert json.loads((out / "baseline.json").read_text())["metrics"] == \
        json.loads((OLD / "sweep" / "baseline.json").read_text())["metrics"]
    assert again.frame.drop(columns="seconds").equals(old.frame.drop(columns="seconds"))
