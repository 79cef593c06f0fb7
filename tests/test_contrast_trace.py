"""Tracing a contrast: its metric is the linear lean Σ_g w_g log p(form_g), multi-token forms
read from sequences that continue the prompt. The engine equals one plain forward per cell and
form, and the gender contrast traces as the he/she log-odds do."""

import numpy as np
import pytest
from reference_trace import engine_cells, reference_contrast_trace

import interp
from interp.common.errors import InterpError
from interp.locate.corruption import Noise
from interp.measure import prompts as P
from interp.measure.contrast import contrast

KINDS = ("resid", "mlp", "attn", "head")


def sampled(cells, n=80, seed=0):
    """A seeded sample of a trace's cells, every kind and the first positions included: the
    plain reference runs one forward per cell and form."""
    keys = sorted(cells)
    rng = np.random.default_rng(seed)
    return {keys[i] for i in rng.choice(len(keys), min(n, len(keys)), replace=False)}


def some(prompt_set, n=3):
    return prompt_set[:: max(1, len(prompt_set) // n)][:n]


def test_the_traced_span_is_the_declaration_or_the_subject(tiny_llama):
    told = contrast("misgendering").prompts(tiny_llama, "test")
    p = next(p for p in told if p.declared == "xe" and p.text.count("xe/xem") == 1)
    assert p.subject.startswith("xe/xem") and p.split == "test" and p.group is None
    religion = contrast("religion").prompts(tiny_llama, "train")
    assert all(p.subject in p.text and p.group in contrast("religion").groups
               for p in religion)


@pytest.mark.parametrize("name", ["misgendering", "religion"])
def test_a_contrast_trace_equals_plain_forwards_of_every_form(tiny_llama, name):
    c = contrast(name)
    ps = some(c.prompts(tiny_llama, "train"))
    result = interp.trace(tiny_llama, ps, contrast=c, kinds=KINDS, samples=2, window=2, seed=1)
    got = engine_cells(result)
    picked = sampled(got)
    ref, clean, corrupt = reference_contrast_trace(tiny_llama, ps, Noise(samples=2), c,
                                                   kinds=KINDS, window=2, seed=1, cells=picked)
    assert len(ref) == len(picked)
    assert max(abs(got[k] - v) for k, v in ref.items()) <= 1e-4
    assert np.allclose(result.prompts["clean"], clean, atol=1e-4)
    assert np.allclose(result.prompts["corrupt"], corrupt, atol=1e-4)
    assert result.spec["metric"] == f"contrast:{name}"


def test_the_clean_metric_is_the_weighted_score_of_the_contrast(tiny_llama):
    c = contrast("misgendering")
    ps = some(c.prompts(tiny_llama, "test"), 6)
    result = interp.trace(tiny_llama, ps, contrast=c, kinds=("mlp",), samples=1)
    scored = c.logprobs(tiny_llama, c.items("test").set_index("text").loc[
        [p.text for p in ps]].reset_index())
    expected = [sum(w * row[g] for g, w in c.trace_weights(None, row["declared"]).items())
                for _, row in scored.iterrows()]
    assert np.allclose(result.prompts["clean"], expected, atol=1e-4)


def test_the_gender_contrast_traces_as_the_log_odds(tiny_llama):
    ps = P.from_templates(tiny_llama, ["The {} said that", "After lunch the {} said that"],
                          ["nurse", "carpenter"])
    plain = interp.trace(tiny_llama, ps, kinds=("resid", "mlp", "attn"), window=3)
    gender = interp.trace(tiny_llama, ps, contrast="gender", kinds=("resid", "mlp", "attn"),
                          window=3)
    assert np.allclose(plain.frame["patched"], gender.frame["patched"], atol=1e-5)
    assert "contrast" not in plain.spec


def test_a_contrast_trace_reruns_from_its_spec(tiny_llama):
    c = contrast("religion")
    ps = some(c.prompts(tiny_llama, "test"), 2)
    first = interp.trace(tiny_llama, ps, contrast=c, kinds=("mlp", "attn"), samples=2)
    again = interp.trace(tiny_llama, ps, spec=first.spec)
    assert np.array_equal(first.frame["patched"], again.frame["patched"])
    with pytest.raises(InterpError, match="not both"):
        interp.trace(tiny_llama, ps, contrast=c, metric="gap")
    with pytest.raises(InterpError, match="nothing to trace"):
        interp.trace(tiny_llama)
