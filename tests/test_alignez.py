"""AlignEZ representation edits: the directions from their states, the hook's map, applying and
reverting, folding into weights where the map allows it, and clear errors."""

import pytest
import torch

from interp.mitigate.alignez import (RepresentationEdit, alignez, directions_from,
                                     last_token_states)
from interp.mitigate.edit import EditError
from interp.model.forward import last_token_logprobs
from interp.model.runner import capture

HELPFUL = ["The cat sat on the mat", "A dog ran home", "Birds fly south", "It rained all day",
           "We went to the shop"]
HARMFUL = ["The nurse said that she", "The doctor said he", "My boss is a man", "He was angry",
           "She cried again"]


def _ids(model):
    return [model.tokenizer(t, add_special_tokens=False)["input_ids"] for t in HELPFUL + HARMFUL]


def test_directions_point_where_the_states_differ():
    g = torch.Generator().manual_seed(0)
    helpful = torch.randn(40, 16, generator=g, dtype=torch.float64) * 0.1
    harmful = torch.randn(40, 16, generator=g, dtype=torch.float64) * 0.1
    helpful[:, 0] += 3.0
    harmful[:, 0] += 3.0       # what both share
    harmful[:, 3] += 2.0       # the harmful states lie off the helpful ones along e3
    helpful[:, 7] += 1.5 * torch.randn(40, generator=g, dtype=torch.float64)  # spread on e7
    V, u = directions_from(helpful, harmful, 1)
    assert V[3, 0] > 0.99 and abs(u[7]) > 0.99
    assert abs(float(V[:, 0] @ u)) < 1e-9


@pytest.mark.parametrize("site", ["mlp", "attn"])
def test_an_output_edit_folds_into_the_weights_exactly(tiny, site):
    e = alignez(tiny, HELPFUL, HARMFUL, layers=[0, 1], k=2, alpha=1.0, beta=0.5, site=site)
    ids = _ids(tiny)
    base = last_token_logprobs(tiny, ids)
    with e.applied(tiny):
        hooked = last_token_logprobs(tiny, ids)
    assert (hooked - base).abs().max() > 1e-3
    folded = e.to_edit(tiny)
    assert folded.sites() == [(site, 0), (site, 1)]
    with folded.applied(tiny):
        assert torch.allclose(last_token_logprobs(tiny, ids), hooked, atol=1e-4)
    assert torch.equal(last_token_logprobs(tiny, ids), base)


def test_the_hook_applies_its_map_and_reverts_exactly(tiny_llama):
    e = alignez(tiny_llama, HELPFUL, HARMFUL, layers=[1], k=2, alpha=1.0, beta=0.0)
    name = tiny_llama.arch.hook("resid_post", 1)
    before = last_token_states(tiny_llama, HARMFUL, [name])[name]
    V, _ = e.directions[1]
    assert (before @ V.double()).abs().max() > 1e-3
    ids = _ids(tiny_llama)
    base = last_token_logprobs(tiny_llama, ids)
    e.apply(tiny_llama)
    try:
        with pytest.raises(EditError, match="already applied"):
            e.apply(tiny_llama)
        # it persists through the TransformerLens hook blocks other code opens and closes
        store, hooks = capture([name])
        with tiny_llama.bridge.hooks(fwd_hooks=hooks):
            last_token_logprobs(tiny_llama, ids[:1])
        after = last_token_states(tiny_llama, HARMFUL, [name])[name]
        # α = 1 removes the harmful component, and the map is I − V Vᵀ
        assert (after @ V.double()).abs().max() < 1e-4
        assert torch.allclose(after, before @ e.matrix(1).T, atol=1e-4)
        assert (store[name][0] @ V).abs().max() < 1e-4
    finally:
        e.revert(tiny_llama)
    assert torch.equal(last_token_logprobs(tiny_llama, ids), base)


def test_save_load_and_the_errors_that_say_what_to_do(tiny_llama, tiny_gpt2, tmp_path):
    e = alignez(tiny_llama, HELPFUL, HARMFUL, layers=[0, 1], k=1, alpha=0.5, beta=0.2)
    back = RepresentationEdit.load(e.save(tmp_path / "r.safetensors"))
    assert (back.alpha, back.beta, back.site, back.layers) == (0.5, 0.2, "resid", [0, 1])
    assert torch.equal(back.directions[1][0], e.directions[1][0])
    with pytest.raises(EditError, match="cannot be folded into weights"):
        e.to_edit(tiny_llama)
    with pytest.raises(EditError, match="model it was made for"):
        e.apply(tiny_gpt2)
    with pytest.raises(EditError, match="site must be"):
        alignez(tiny_llama, HELPFUL, HARMFUL, layers=[0], site="head")
    with pytest.raises(EditError, match="more than 9 harmful texts"):
        alignez(tiny_llama, HELPFUL, HARMFUL, layers=[0], k=9)
    with pytest.raises(Exception, match="outside the model"):
        alignez(tiny_llama, HELPFUL, HARMFUL, layers=[99])
    with pytest.raises(Exception, match="one set is empty"):
        alignez(tiny_llama, [], HARMFUL, layers=[0])
    folded = alignez(tiny_llama, HELPFUL, HARMFUL, layers=[0], site="mlp").to_edit(tiny_llama)
    with pytest.raises(EditError, match="not a representation edit"):
        RepresentationEdit.load(folded.save(tmp_path / "e.safetensors"))


def test_lean_contrasts_split_prompts_by_the_models_own_lean(tiny_llama):
    import interp
    from interp import prompts as P
    from interp.mitigate.alignez import lean_contrasts

    ps = P.professions(tiny_llama, "train", templates=P.TEMPLATES[:2])
    helpful, harmful = lean_contrasts(tiny_llama, ps)
    f = interp.bias(tiny_llama, ps, progress=False).frame
    f = f[f.stereotypical != 0]
    assert len(helpful) + len(harmful) == len(f) and harmful
    lean = dict(zip(f.text, f.logodds * -f.stereotypical))
    assert all(lean[t] > 0 for t in harmful) and all(lean[t] <= 0 for t in helpful)


def test_a_centered_edit_acts_about_the_mean_helpful_state(tiny_llama, tmp_path):
    e = alignez(tiny_llama, HELPFUL, HARMFUL, layers=[1], k=1, center=True)
    name = tiny_llama.arch.hook("resid_post", 1)
    good = last_token_states(tiny_llama, HELPFUL, [name])[name]
    before = last_token_states(tiny_llama, HARMFUL, [name])[name]
    V = e.directions[1][0].double()
    mu = good.mean(0)
    assert torch.allclose(e.centers[1].double(), mu, atol=1e-5)
    with e.applied(tiny_llama):
        after = last_token_states(tiny_llama, HARMFUL, [name])[name]
    # the harmful states now sit where the helpful mean does along V, and nothing else moves
    assert torch.allclose(after @ V, (mu @ V).expand(len(HARMFUL), 1), atol=1e-4)
    rest = torch.eye(V.shape[0], dtype=torch.float64) - V @ V.T
    assert torch.allclose(after @ rest, before @ rest, atol=1e-4)
    back = RepresentationEdit.load(e.save(tmp_path / "c.safetensors"))
    assert torch.equal(back.centers[1], e.centers[1])
    with pytest.raises(EditError, match="centered representation edit cannot be folded"):
        alignez(tiny_llama, HELPFUL, HARMFUL, layers=[1], site="mlp", center=True).to_edit(
            tiny_llama)
