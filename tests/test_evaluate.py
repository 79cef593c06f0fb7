import numpy as np
import pytest

import interp
from interp import capability as cap
from interp import prompts as P
from interp.common.errors import InterpError
from interp.measure.evaluate import EvalReport, comparison_table, evaluate
from interp.mitigate.verify import Verification, prompts_of, verify


@pytest.fixture(scope="module")
def occupations(tiny_llama):
    return P.professions(tiny_llama, "test", templates=P.TEMPLATES[:2])[:16]


@pytest.fixture(scope="module")
def report(tiny_llama, occupations):
    return evaluate(tiny_llama, ("occupations", "definitional", "facts", "perplexity"),
                    occupations=occupations, n_boot=200)


def test_report_numbers_are_the_suites_own(tiny_llama, occupations, report):
    f = interp.bias(tiny_llama, occupations, progress=False).frame
    assert report.value("occupations", "abs_gap") == pytest.approx(f.abs_gap.mean(), abs=1e-9)
    assert report.value("occupations", "abs_logodds") == pytest.approx(
        f.logodds.abs().mean(), abs=1e-9)
    assert report.value("facts", "accuracy") == pytest.approx(
        cap.factual_recall(tiny_llama, n_boot=10).value)
    assert report.value("perplexity", "perplexity") == pytest.approx(
        cap.perplexity(tiny_llama, n_boot=10).value, rel=1e-6)
    row = report.frame[report.frame.metric == "abs_gap"].iloc[0]
    assert row.ci_low <= row.value <= row.ci_high and row.n == len(occupations)


def test_report_saves_loads_and_tabulates(tmp_path, report):
    again = EvalReport.load(report.save(tmp_path / "r"))
    assert np.allclose(again.frame.value, report.frame.value)
    assert list(again.frame.suite) == list(report.frame.suite)
    text = report.table()
    assert "occupations" in text and "perplexity" in text
    assert report.plot().data


def test_comparison_reports_change_and_direction(tiny_llama, occupations, report):
    import torch

    reference = cap.next_token_logprobs(tiny_llama)
    w = tiny_llama.arch.mlp_down_weight(tiny_llama.bridge, 0)
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.mul_(1.5)
        after = evaluate(tiny_llama, ("occupations", "perplexity", "kl"), occupations=occupations,
                         reference=reference, n_boot=50)
    finally:
        with torch.no_grad():
            w.copy_(saved)
    m = report.compare(after)
    assert set(m.suite) == {"occupations", "perplexity", "kl"}
    assert np.isnan(m[m.suite == "kl"].before.iloc[0])  # only the after report has a KL
    ppl = m[m.metric == "perplexity"].iloc[0]
    assert ppl.change == pytest.approx(ppl.after - ppl.before)
    assert ppl.improved == (ppl.after < ppl.before)
    assert after.value("kl", "kl") > 0
    assert "before" in comparison_table(report, after)


def test_bad_suite_requests_are_clear_errors(tiny_llama):
    with pytest.raises(InterpError, match="unknown suite"):
        evaluate(tiny_llama, ("facts", "bogus"))
    with pytest.raises(InterpError, match="kl suite needs reference"):
        evaluate(tiny_llama, ("kl",))


@pytest.fixture(scope="module")
def verification(tiny_llama):
    ps = P.professions(tiny_llama, "train", templates=P.TEMPLATES[:1])[:6]
    located = interp.trace(tiny_llama, ps, kinds=("mlp", "attn"), samples=2, progress=False)
    edit = interp.lsdm(tiny_llama, ps, layers=[0, 1], site="subject", n_prefixes=1, prefix_len=4,
                       stats_tokens=1000, strict=False, progress=False)
    fp = tiny_llama.fingerprint()
    v = verify(tiny_llama, edit, located, suites=("occupations", "facts"),
               occupations=P.professions(tiny_llama, "test", templates=P.TEMPLATES[:1])[:8],
               n_boot=50)
    assert tiny_llama.fingerprint() == fp  # the model is left as it was
    return v, edit, located, ps


def test_verify_retraces_with_the_same_spec_and_the_edit_applied(tiny_llama, verification):
    v, edit, located, ps = verification
    same = {k: v2 for k, v2 in located.spec.items() if k != "fingerprint"}
    assert {k: x for k, x in v.after_trace.spec.items() if k != "fingerprint"} == same
    with edit.applied(tiny_llama):
        assert v.after_trace.spec["fingerprint"] == tiny_llama.fingerprint()
        direct = interp.trace(tiny_llama, prompts_of(tiny_llama, located), spec=located.spec,
                              progress=False)
    assert np.allclose(direct.frame.effect, v.after_trace.frame.effect, atol=1e-5)
    assert [p.text for p in prompts_of(tiny_llama, located)] == [p.text for p in ps]


def test_verification_tables_sites_and_round_trips(tmp_path, verification):
    v, edit, _, _ = verification
    sites = v.sites()
    mlp = sites[sites.kind == "mlp"]
    assert sorted(mlp.layer) == edit.layers
    assert np.allclose(mlp.difference, mlp.after - mlp.before)
    assert "kl" in set(v.after.frame.suite) and "kl" not in set(v.before.frame.suite)
    assert "Suites before and after" in v.table()
    again = Verification.load(v.save(tmp_path / "v"))
    assert np.allclose(again.sites().after, sites.after)
    assert v.plot().data


def test_declared_suite_is_the_audits_misgendering_rate(tiny_llama):
    """The declared-pronouns suite reads the same rate as the implicit-reward audit, which
    scores each prompt in a pass of its own shared with the audit's continuations."""
    r = evaluate(tiny_llama, ("declared",), n_boot=50)
    audit = interp.reward_audit(tiny_llama, tiny_llama, "misgendering", n_boot=50,
                                progress=False)
    for group in ("binary", "tgnb"):
        row = r.row("declared", f"misgendered_{group}")
        assert row.value == pytest.approx(
            100 * audit.summary[f"misgendering_rate_reference_{group}"], abs=1e-9)
        assert row.ci_low <= row.value <= row.ci_high
    assert r.row("declared", "misgendered_tgnb").n == (r.details["declared"].group == "tgnb").sum()
