"""interp.debias: the recipe validated for a model, found by fingerprint or name, run by the same
code the benchmark measured, and said; the choosing rule; the recorded choices themselves."""

import dataclasses
from pathlib import Path

import pytest
import torch

import interp
from interp.mitigate.debias import (SHARES, SIZES, Choice, choices, choose, debias, lookup,
                                    read_table, record, score)
from interp.mitigate.recipes import RECIPES, fit_recipe
from interp.mitigate.sites import Sites

ROOT = Path(__file__).resolve().parents[1]


def _row(**changes):
    row = {c: 50.0 for c in SHARES} | {c: 1.0 for c in SIZES}
    row |= {"syntax acc %": 70.0, "definitional %": 99.0, "facts %": 90.0, "perplexity": 30.0}
    return row | changes


def test_the_rule_charges_capability_lost_beyond_the_allowance_syntax_included():
    base = _row()
    assert score(base, base) == pytest.approx(50.0)  # no direction left, all of the size
    assert score(_row(**{c: 0.5 for c in SIZES}), base) == pytest.approx(25.0)
    assert score(_row(**{c: 60.0 for c in SHARES}), base) == pytest.approx(60.0)
    # 2 points of syntax are allowed; each point beyond costs 10
    assert score(_row(**{"syntax acc %": 68.0}), base) == pytest.approx(50.0)
    assert score(_row(**{"syntax acc %": 65.0}), base) == pytest.approx(80.0)
    assert score(_row(**{"facts %": 88.0}), base) == pytest.approx(60.0)
    assert score(_row(perplexity=30.0 * 1.05), base) == pytest.approx(80.0)


SITES = Sites([2, 3], [3], "measured there")


def _choice(fitted, recipe, **kw):
    scores = {"lsdm": 10.0, "ft": 20.0, "unedited": 1.0, "steer": 5.0}  # the last two: no recipes
    return dataclasses.replace(choose(scores, model=fitted, table="t.csv", sites=SITES),
                               recipe=recipe, **kw)


def test_choose_takes_the_lowest_recipe_and_names_the_runner_up(tiny_llama):
    c = choose({"cda": 31.3, "lsdm-templates": 35.9, "lsdm": 56.2, "unedited": 68.3,
                "project": 1.0}, model=tiny_llama, table="t.csv", sites=SITES)
    assert (c.recipe, c.runner_up, c.score, c.runner_up_score) == ("cda", "lsdm-templates",
                                                                   31.3, 35.9)
    assert (c.mlp_layers, c.attn_layers) == ("2 3", "3")
    assert (c.sites.mlp, c.sites.attn) == ([2, 3], [3])
    assert c.fingerprint == tiny_llama.fingerprint() and c.model == "tiny-llama"


def test_records_are_found_by_fingerprint_then_by_name(tiny_llama, tmp_path):
    path = tmp_path / "validated.csv"
    assert lookup(tiny_llama, path) == (None, "")
    record(_choice(tiny_llama, "cda"), path)
    record(_choice(tiny_llama, "lsdm", fingerprint="f" * 32, model="other"), path)
    assert len(choices(path)) == 2
    found, how = lookup(tiny_llama, path)
    assert (found.recipe, how) == ("cda", "fingerprint")
    assert found.sites[:2] == (SITES.mlp, SITES.attn)  # the sites survive the file
    record(_choice(tiny_llama, "lsdm-templates"), path)  # replaces the entry for these weights
    assert [c.recipe for c in choices(path)] == ["lsdm", "lsdm-templates"]
    other = _choice(tiny_llama, "ft", fingerprint="0" * 32)
    only_name = tmp_path / "by_name.csv"
    record(other, only_name)
    found, how = lookup(tiny_llama, only_name)
    assert (found.recipe, how) == ("ft", "name")


def _deltas(edit):
    return {s: edit.delta(s[1], s[0]) for s in edit.sites()}


def test_debias_runs_the_recorded_recipe_by_the_benchmarks_code_and_says_so(tiny_llama,
                                                                            tmp_path):
    path = tmp_path / "validated.csv"
    record(_choice(tiny_llama, "lsdm-templates"), path)
    edit = debias(tiny_llama, records=path, progress=False)
    assert edit.meta["recipe"] == "lsdm-templates"
    assert edit.meta["chosen"].startswith("lsdm-templates: chosen for tiny-llama")
    assert "score 10.0, runner-up ft 20.0" in edit.meta["chosen"]
    # at the sites it was validated at, recorded with it
    assert (edit.layers, edit.attn_layers) == (SITES.mlp, SITES.attn)
    assert "validated at these sites" in edit.meta["sites_chosen"]
    same = fit_recipe(tiny_llama, "lsdm-templates", sites=SITES)
    assert edit.sites() == same.sites()
    for site, delta in _deltas(same).items():
        torch.testing.assert_close(_deltas(edit)[site], delta, rtol=0, atol=0)
    # the model is left as it was, and the edit changes what it predicts
    before = tiny_llama.fingerprint()
    with edit.applied(tiny_llama):
        assert tiny_llama.fingerprint() != before
    assert tiny_llama.fingerprint() == before


def test_debias_without_a_record_runs_lsdm_and_says_nothing_was_validated(tiny_gpt2, tmp_path):
    from interp.mitigate.sites import find_sites

    edit = debias(tiny_gpt2, records=tmp_path / "none.csv", progress=False)
    assert edit.meta["recipe"] == "lsdm"
    assert "no recipe was validated for tiny-gpt2" in edit.meta["chosen"]
    # at the sites a trace of the model chooses, as every entry point chooses them
    traced, _ = find_sites(tiny_gpt2, interp.prompts.professions(tiny_gpt2, "train"), "last")
    assert (edit.layers, edit.attn_layers) == (traced.mlp, traced.attn)


def test_debias_runs_a_named_recipe(tiny_llama):
    edit = debias(tiny_llama, "cda", steps=3, progress=False)
    assert (edit.meta["recipe"], edit.meta["method"], edit.meta["steps"]) == ("cda", "cda", 3)
    assert edit.meta["chosen"] == "cda: asked for"
    assert "cda" in repr(edit)
    with pytest.raises(interp.EditError, match="unknown recipe 'best'"):
        debias(tiny_llama, "best")


def test_each_recorded_choice_is_its_tables_best_recipe_under_the_current_rule():
    # interp/data/validated.csv must agree with the tables it cites: a change of the rule or of a
    # table without `benchmarks/mitigations.py --rescore TABLE --record` fails here
    on_record = choices()
    assert {c.model for c in on_record} == {"smollm2-135m-instruct", "gemma-3-270m"}
    for c in on_record:
        table = read_table(ROOT / c.table, "validation")
        scores = {m: score(table.loc[m], table.loc["unedited"]) for m in table.index}
        ranked = sorted((s, m) for m, s in scores.items() if m in RECIPES)
        assert (c.recipe, c.runner_up) == (ranked[0][1], ranked[1][1]), c.model
        assert c.score == pytest.approx(ranked[0][0], abs=0.01)
        written = table["score (lower better)"]
        assert written[c.recipe] == pytest.approx(c.score, rel=2e-3)


def test_the_command_fits_the_recipe_and_writes_the_edit(tmp_path, capsys):
    from interp.cli import run

    assert run(["debias", "-m", "tiny-llama", "--recipe", "cda", "--steps", "2",
                "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ran cda: asked for" in out
    edit = interp.Edit.load(tmp_path / "edit.safetensors")
    assert edit.meta["recipe"] == "cda" and edit.meta["steps"] == 2
    # the file holds the model it was fitted on
    edit.check_model(interp.load_model("tiny-llama"))


def test_choice_says_what_it_is():
    c = Choice("m", "f" * 32, "cda", 31.29, "lsdm-templates", 35.94, "rule", "2026-12-06", "t.csv")
    assert c.says().startswith("cda: chosen for m on the validation part")
    assert "runner-up lsdm-templates 35.9" in c.says()


def test_the_demo_report_says_what_ran(tiny_llama):
    from interp.report import _edit_text

    tuned = debias(tiny_llama, "cda", steps=2, progress=False)
    text = _edit_text(tuned)
    assert text.startswith("cda (fine-tuning the same weights") and "2 optimiser steps" in text
    assert f"MLP layers {tuned.layers}" in text
    solved = debias(tiny_llama, "lsdm-templates", progress=False)
    text = _edit_text(solved)
    assert text.startswith("lsdm-templates at the last token") and "λ = 3000.0" in text
