"""End to end on the bundled model: LSDM at the last token carries to occupations and sentence
templates it never saw, and capabilities survive.

The edit is fitted on the train occupations with every other template (9 of 18; bare prompts,
layers 24–29, λ = 3000) with the train-split definitional words preserved (weight 0.1), and
asserted on the 54 test occupations over all 18 templates. Measured when this was written
(transformers 5.24): |log-odds| −70%, |gap| −72%, −67% on the 9 templates it never saw;
definitional accuracy −1.0 point, facts −1.3 points, perplexity −0.1%, KL 0.0006 nats/token.
The thresholds below leave room for numerical drift, not for a different result.

docs/editing.md's recipe fits every template (−73% on the test occupations, facts −0.9 points);
that full fit takes twice as long and is measured by benchmarks/edit_sites.py. The paper's edit
at the subject (the default, `site="subject"`) does not reach these on this model (−11% on test
occupations; docs/editing.md, benchmarks/edit_ceiling.py); notebooks 02 and 03 fit and check it on the
bundled model, and the tiny-model tests check its solve.
"""

import pytest

import interp
from interp import LAST_TOKEN_TEMPLATES
from interp import capability as cap
from interp import prompts as P

pytestmark = pytest.mark.integration

LAYERS = [24, 25, 26, 27, 28, 29]
FITTED_TEMPLATES = LAST_TOKEN_TEMPLATES[::2]


@pytest.fixture(scope="module")
def fitted(bundled):
    train = P.professions(bundled, "train", templates=FITTED_TEMPLATES)
    keep = P.definitional(bundled, templates=FITTED_TEMPLATES, split="train")
    edit = interp.lsdm(bundled, train, layers=LAYERS, site="last", n_prefixes=0, preserve=keep,
                       preserve_weight=0.1, seed=0, progress=False)
    return edit, train


def test_bias_falls_on_unseen_occupations_and_unseen_templates(bundled, fitted):
    edit, train = fitted
    test = P.professions(bundled, "test")
    assert not set(test.subjects()) & set(train.subjects())
    before = interp.bias(bundled, test, progress=False).frame
    with edit.applied(bundled):
        after = interp.bias(bundled, test, progress=False).frame
    assert after.logodds.abs().mean() <= 0.35 * before.logodds.abs().mean()
    assert after.abs_gap.mean() <= 0.35 * before.abs_gap.mean()
    unseen = ~before.template.isin(FITTED_TEMPLATES)
    assert unseen.sum() == 9 * before.subject.nunique()
    assert after.logodds.abs()[unseen].mean() <= 0.4 * before.logodds.abs()[unseen].mean()


def test_capabilities_survive(bundled, fitted):
    edit, _ = fitted
    reference = cap.next_token_logprobs(bundled)
    before = {"def": cap.definitional(bundled, n_boot=10).value,
              "facts": cap.factual_recall(bundled, n_boot=10).value,
              "ppl": cap.perplexity(bundled, n_boot=10).value}
    with edit.applied(bundled):
        after = {"def": cap.definitional(bundled, n_boot=10).value,
                 "facts": cap.factual_recall(bundled, n_boot=10).value,
                 "ppl": cap.perplexity(bundled, n_boot=10).value,
                 "kl": cap.kl_divergence(bundled, reference, n_boot=10).value}
    assert after["def"] >= before["def"] - 0.02
    assert after["facts"] >= before["facts"] - 0.02
    assert after["ppl"] <= before["ppl"] * 1.02
    assert 0 < after["kl"] < 0.01


def test_retrace_with_the_same_spec_sees_the_edit(bundled, fitted):
    """verify's re-trace: the same spec on the edited weights. Its clean bias falls with the
    edit. (On this model the MLPs at the last token carry almost none of the subject's effect:
    summed over layers 24-29 the indirect effects at the last token are about ±0.002 of |gap|,
    mixed in sign, against a clean |gap| of 0.017, so a before/after ratio of them is noise and
    is not asserted; the trace figures show it.)"""
    edit, train = fitted
    ps = P.professions(bundled, "train", templates=LAST_TOKEN_TEMPLATES[:1])
    ps = ps.filter(lambda p: p.subject in set(ps.subjects()[::25]))
    before = interp.trace(bundled, ps, kinds=("mlp",), samples=2, seed=0, metric="abs_gap",
                          progress=False)
    with edit.applied(bundled):
        after = interp.trace(bundled, ps, spec=before.spec, progress=False)
    same = lambda spec: {k: v for k, v in spec.items() if k != "fingerprint"}  # noqa: E731
    assert same(after.spec) == same(before.spec) and len(after.frame) == len(before.frame)
    assert after.spec["fingerprint"] != before.spec["fingerprint"]  # traced with the edit on
    assert after.prompts.clean.mean() < 0.6 * before.prompts.clean.mean()
    cmp = before.compare(after).frame
    sites = cmp[(cmp.kind == "mlp") & (cmp.token_group == interp.mitigate.keys.SITE_TOKEN["last"])
                & cmp.layer.isin(LAYERS)]
    assert sorted(sites.layer) == LAYERS  # the edited sites are in the comparison
