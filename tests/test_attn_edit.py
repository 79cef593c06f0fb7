"""LSDM on the attention output projection: the key it reads, its statistics, the fit, and the
Edit's apply/revert, save/load and export with attention updates. Tiny random models."""

import pytest
import torch

import interp
from interp import prompts as P
from interp.mitigate.edit import Edit, EditError
from interp.mitigate.lsdm import lsdm
from interp.mitigate.stats import corpus_tokens, key_second_moments
from interp.model.forward import last_token_logprobs


def test_the_attention_key_through_the_output_projection_is_the_attention_output(tiny):
    # What an attention edit relies on: the bridge's per-head hook_z, heads side by side, is
    # exactly the input of the output projection whose weight edit_weight returns.
    layer = 1
    key, out = tiny.arch.key_hook("attn", layer), tiny.arch.hook("attn", layer)
    ids = torch.tensor([tiny.tokenizer("The nurse said that she was late")["input_ids"]])
    _, cache = tiny.bridge.run_with_cache(ids, names_filter=[key, out])
    w = tiny.arch.edit_weight(tiny.bridge, "attn", layer)
    bias = getattr(tiny.arch.out_proj(tiny.bridge, "attn", layer), "bias", None)
    k = cache[key][0].flatten(1)
    assert k.shape[1] == tiny.arch.key_width("attn") == w.shape[1]
    rebuilt = k @ w.T + (0 if bias is None else bias)
    assert (rebuilt - cache[out][0]).abs().max() < 1e-5


def test_attention_statistics_are_the_second_moment_of_the_keys(tiny_llama):
    layer = 2
    C = key_second_moments(tiny_llama, [layer], n_tokens=3000, component="attn",
                           use_cache=False)[layer]
    seqs, _ = corpus_tokens(tiny_llama, None, 3000)
    hook = tiny_llama.arch.key_hook("attn", layer)
    total = torch.zeros_like(C)
    for s in seqs:
        _, cache = tiny_llama.bridge.run_with_cache(torch.tensor([s]), names_filter=hook)
        k = cache[hook][0].flatten(1).double()
        total += k.T @ k
    assert C.shape == (tiny_llama.arch.key_width("attn"),) * 2
    assert torch.allclose(C, total / 3000, rtol=1e-6, atol=1e-9)


def test_an_unknown_component_is_a_clear_error(tiny_llama):
    with pytest.raises(interp.InterpError, match="unknown edit component 'ffn'"):
        tiny_llama.arch.key_hook("ffn", 0)


def _pronoun_logodds(model, ps):
    ids = interp.metrics.Candidates.resolve(model).ids
    lp = last_token_logprobs(model, [p.input_ids for p in ps], progress=False)
    return lp[:, ids["female"]] - lp[:, ids["male"]]


@pytest.fixture(scope="module")
def attn_edit(tiny_llama):
    ps = P.professions(tiny_llama, "train", templates=P.TEMPLATES[:3])[:8]
    top = tiny_llama.arch.n_layers - 1
    # A random model is barely biased: a tight tolerance makes the targets move.
    edit = lsdm(tiny_llama, ps, layers=[top], attn_layers=[top - 1, top], site="last",
                preserve=None, n_prefixes=0, lam=1e-2, tol=1e-3, stats_tokens=1500, progress=False)
    return edit, ps


@pytest.mark.smoke
def test_an_attention_and_mlp_edit_balances_its_prompts(tiny_llama, attn_edit):
    edit, ps = attn_edit
    top = tiny_llama.arch.n_layers - 1
    assert edit.layers == [top] and edit.attn_layers == [top - 1, top]
    assert edit.sites() == [("attn", top - 1), ("attn", top), ("mlp", top)]
    assert edit.meta["attn_layers"] == [top - 1, top]
    for layer in edit.attn_layers:
        U, V = edit.attn[layer]
        assert U.shape == (tiny_llama.arch.d_model, len(ps))
        assert V.shape == (tiny_llama.arch.key_width("attn"), len(ps))
    with edit.applied(tiny_llama):
        reached = _pronoun_logodds(tiny_llama, ps).abs().mean()
    assert float(reached) == pytest.approx(edit.meta["targets"]["abs_logodds_after"], abs=1e-3)
    assert reached < 1e-3


def test_an_attention_only_edit_balances_its_prompts(tiny_llama):
    ps = P.professions(tiny_llama, "train", templates=P.TEMPLATES[:2])[:6]
    top = tiny_llama.arch.n_layers - 1
    edit = lsdm(tiny_llama, ps, layers=[], attn_layers=[top], site="last", preserve=None,
                n_prefixes=0, lam=1e-2, tol=1e-3, stats_tokens=1500, progress=False)
    assert edit.layers == [] and edit.attn_layers == [top]
    before = _pronoun_logodds(tiny_llama, ps).abs().mean()
    with edit.applied(tiny_llama):
        after = _pronoun_logodds(tiny_llama, ps).abs().mean()
    assert after < 1e-3 < before
    with pytest.raises(EditError, match="no layers to edit"):
        lsdm(tiny_llama, ps, layers=[], site="last")


@pytest.mark.smoke
def test_apply_and_revert_of_attention_updates_are_bit_exact(tiny, tmp_path):
    ps = P.professions(tiny, "train", templates=P.TEMPLATES[:1])[:4]
    edit = lsdm(tiny, ps, layers=[1], attn_layers=[1, 2], site="last", preserve=None,
                n_prefixes=0, stats_tokens=1000, strict=False, progress=False)
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    o_proj = {l: tiny.arch.edit_weight(tiny.bridge, "attn", l) for l in (1, 2)}
    originals = {l: w.detach().clone() for l, w in o_proj.items()}
    with edit.applied(tiny):
        for l, w in o_proj.items():
            assert torch.allclose(w.double() - originals[l].double(), edit.delta(l, "attn"),
                                  atol=1e-5)
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, before[k])
    again = Edit.load(edit.save(tmp_path / "edit.safetensors"))
    assert again.sites() == edit.sites() and again.meta == edit.meta
    for l in edit.attn_layers:
        assert torch.equal(again.delta(l, "attn"), edit.delta(l, "attn"))


def test_a_file_with_a_stranger_tensor_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"layer0.U": torch.zeros(2, 1), "bias": torch.zeros(2)}, str(tmp_path / "e"),
              metadata={"interp_edit": "{}"})
    with pytest.raises(EditError, match="'bias' that is not an edit factor"):
        Edit.load(tmp_path / "e")


def test_an_attention_edit_exports_and_reloads_with_the_same_logits(tiny_llama, attn_edit,
                                                                     tmp_path):
    edit, _ = attn_edit
    r = interp.export(tiny_llama, tmp_path / "hf", "hf", edit=edit)
    assert r.ok and r.weights_identical
    assert "| attention layers |" in (tmp_path / "hf" / "README.md").read_text()
    assert not edit.is_applied(tiny_llama)  # the export applied it for itself and reverted
