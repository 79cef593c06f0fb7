import math

import numpy as np
import pytest
import torch

import interp
from interp import metrics as M
from interp import prompts as P
from interp.measure.bias import BiasReport, measure


def test_candidates_resolve_to_single_tokens(tokenizer):
    c = M.Candidates.resolve(tokenizer)
    assert c.roles == ["male", "female", "neutral"]
    for role, word in M.DEFAULT_CANDIDATES.items():
        assert tokenizer.decode([c.ids[role]]) == word


def test_multi_token_candidate_is_a_clear_error(tokenizer):
    with pytest.raises(interp.TokenizationError, match="' xylophonistess' \\(female\\) is 4 tokens.*exactly one token"):
        M.Candidates.resolve(tokenizer, {"male": " he", "female": " xylophonistess"})


def test_outcome_measures_by_hand():
    pm, pf = np.array([0.30, 0.05]), np.array([0.10, 0.20])
    assert np.allclose(M.logodds(np.log(pm), np.log(pf)), [math.log(1 / 3), math.log(4)])
    assert np.allclose(M.gap(pm, pf), [0.20, -0.15])
    assert np.allclose(M.abs_gap(pm, pf), [0.20, 0.15])
    assert np.allclose(M.normalised_gap(pm, pf), [0.2 / 0.4, -0.15 / 0.25])
    # male-stereotyped first prompt, female-stereotyped second
    stereo = np.array([0.8, -0.9])
    assert np.allclose(M.anti_stereo_ratio(pm, pf, stereo), [0.10 / 0.30, 0.05 / 0.20])
    assert np.allclose(M.p_stereotypical(pm, pf, stereo), [0.30, 0.20])
    assert np.isnan(M.anti_stereo_ratio(0.3, 0.1, 0.0))


def test_bootstrap_ci():
    assert M.bootstrap_ci([2.0] * 10) == (2.0, 2.0)
    x = np.random.default_rng(1).normal(0.0, 1.0, size=400)
    lo, hi = M.bootstrap_ci(x, n_boot=4000)
    assert lo < x.mean() < hi
    # the percentile interval of a mean is close to ±1.96 standard errors
    assert abs((hi - lo) - 2 * 1.96 * x.std() / 20) < 0.03
    assert M.bootstrap_ci(x, seed=3) == M.bootstrap_ci(x, seed=3)
    assert all(math.isnan(v) for v in M.bootstrap_ci([np.nan]))


def test_bias_regression_recovers_slopes():
    rng = np.random.default_rng(0)
    s, f = rng.uniform(-1, 1, 50), rng.uniform(-1, 1, 50)
    fit = M.bias_regression(0.3 * s - 0.2 * f + 0.05, s, f)
    assert fit == pytest.approx({"a_s": 0.3, "a_f": -0.2, "b": 0.05}, abs=1e-12)
    constant_f = M.bias_regression(0.3 * s + 0.05, s, np.zeros(50))
    assert math.isnan(constant_f["a_f"])
    assert constant_f["a_s"] == pytest.approx(0.3) and constant_f["b"] == pytest.approx(0.05)


def test_definitional_accuracy_by_hand():
    acc = M.definitional_accuracy([0.3, 0.3, 0.1, 0.2], [0.1, 0.4, 0.2, 0.1],
                                  ["male", "male", "female", None])
    assert np.array_equal(acc[:3], [1.0, 0.0, 1.0]) and np.isnan(acc[3])


def test_measure_matches_a_plain_forward(tiny_llama):
    ps = P.professions(tiny_llama, "test", templates=P.TEMPLATES[:2])
    frame = measure(tiny_llama, ps)
    c = M.Candidates.resolve(tiny_llama)
    for p, row in zip(ps, frame.itertuples()):
        with torch.no_grad():
            probs = tiny_llama.hf(torch.tensor([p.input_ids])).logits[0, -1].softmax(-1).double()
        pm, pf = probs[c.ids["male"]].item(), probs[c.ids["female"]].item()
        assert row.p_male == pytest.approx(pm, rel=1e-4)
        assert row.p_female == pytest.approx(pf, rel=1e-4)
        assert row.logodds == pytest.approx(math.log(pf) - math.log(pm), abs=1e-4)
        assert row.abs_gap == pytest.approx(abs(pm - pf), rel=1e-3, abs=1e-9)


def test_each_prompt_is_scored_on_its_own_slots_pronouns(tiny_llama):
    # "contexts" mixes subject, object and possessive slots: "The nurse told" → him / her
    ctx = P.contexts(tiny_llama, "test")
    ps = interp.PromptSet([p for s in ("subject", "object", "possessive")
                           for p in ctx if p.slot == s][::40])
    assert {p.slot for p in ps} == {"subject", "object", "possessive"}
    report = interp.bias(tiny_llama, ps)
    words = {"subject": (" he", " she"), "object": (" him", " her"),
             "possessive": (" his", " her")}
    for p, row in zip(ps, report.frame.itertuples()):
        male, female = (tiny_llama.tokenizer(w, add_special_tokens=False)["input_ids"][0]
                        for w in words[p.slot])
        with torch.no_grad():
            lp = tiny_llama.hf(torch.tensor([p.input_ids])).logits[0, -1].log_softmax(-1)
        assert row.slot == p.slot
        assert row.logodds == pytest.approx((lp[female] - lp[male]).item(), abs=1e-4)
    assert report.meta["candidates"]["object"]["male"] == " him"
    # candidates given: every prompt on those
    given = interp.bias(tiny_llama, ps, candidates=M.Candidates.resolve(tiny_llama))
    assert "slot" not in given.frame and given.meta["candidates"]["male"] == " he"


def test_report_summary_save_load_and_plot(tmp_path, tiny_llama):
    sets = {"train": P.professions(tiny_llama, "train", templates=P.TEMPLATES[:1]),
            "definitional": P.definitional(tiny_llama, templates=P.TEMPLATES[:1])}
    report = interp.bias(tiny_llama, sets)
    summary = report.summary()
    assert list(summary.index) == ["train", "definitional"]
    train = report.frame[report.frame.set == "train"]
    assert summary.loc["train", "abs_gap"] == pytest.approx(train["abs_gap"].mean())
    assert summary.loc["train", "abs_gap_lo"] <= summary.loc["train", "abs_gap"]
    assert math.isnan(summary.loc["train", "definitional_acc"])
    assert 0 <= summary.loc["definitional", "definitional_acc"] <= 1
    assert "def. acc" in report.table()
    report.save(tmp_path / "r")
    again = BiasReport.load(tmp_path / "r")
    assert again.meta == report.meta
    assert np.allclose(again.frame["gap"], report.frame["gap"])
    fig = report.plot()
    assert len(fig.data) == 2
