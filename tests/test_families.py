"""One conformance test, run for every model family interp supports, on a tiny random model of
that family (`interp.model.tiny`: 4 blocks, both kinds of blocks where a family has two):

- the hooks mean what the engines assume: the MLP and attention outputs are what each adds to
  the residual stream (after a post-norm where there is one), the per-head output is the input
  of the attention's output projection;
- the trace equals one hooked forward per cell (tests/reference_trace.py), every kind, heads
  included, on he/she and on a contrast whose forms are several tokens (misgendering);
- the scorers behind evaluate and the studies (last-token, continuation and staged
  continuation log-probabilities) equal plain forwards of the HF model;
- an LSDM edit of MLP and attention weights reaches its targets (through the norm in post-norm
  families), applies and reverts bit-exactly, and saves and loads unchanged; so does an edit
  that follows a declared pronoun family (multi-token forms);
- the HF and safetensors exports reload with the edited model's logits; GGUF is written where
  the family has a GGUF layout and is otherwise a one-line error naming the formats that work.
"""

import numpy as np
import pytest
import torch
from reference_trace import engine_cells, reference_contrast_trace, reference_trace

import interp
from interp import prompts as P
from interp.export.errors import UnsupportedExportError
from interp.export.gguf_file import GGUF_ARCHITECTURES
from interp.export.safetensors_file import reload_safetensors
from interp.locate.corruption import Noise
from interp.measure.metrics import Candidates
from interp.mitigate.edit import Edit
from interp.model.forward import (continuation_token_logprobs, last_token_logprobs,
                                  staged_continuation_token_logprobs)
from interp.model.tiny import tiny_names

KINDS = ("resid", "mlp", "attn", "head")
TEXTS = ["The nurse said that", "After the long meeting, the paralegal explained that she"]


def hooks_mean_what_the_engines_assume(model):
    ids = torch.tensor([model.tokenizer(TEXTS[1])["input_ids"]])
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(ids)
    for l in range(model.arch.n_layers):
        added = cache[f"blocks.{l}.hook_resid_post"] - cache[f"blocks.{l}.hook_resid_pre"]
        parts = cache[f"blocks.{l}.hook_mlp_out"] + cache[f"blocks.{l}.hook_attn_out"]
        assert torch.allclose(added, parts, atol=1e-5)
        z = cache[f"blocks.{l}.attn.hook_z"].flatten(-2)
        assert torch.equal(z, cache[f"blocks.{l}.attn.o.hook_in"].reshape(z.shape))
        for component in ("mlp", "attn"):
            norm = model.arch.out_norm(model.bridge, component, l)
            written = cache[model.arch.hook(f"{component}_write", l)]
            joined = cache[model.arch.hook(component, l)]
            expected = written if norm is None else norm(written)
            assert torch.allclose(joined, expected, atol=1e-5)


def trace_equals_reference(model):
    ps = P.from_templates(model, ["The {} said that", "After the long meeting, the {} said that"],
                          ["nurse", "paralegal"])
    result = interp.trace(model, ps, kinds=KINDS, samples=2, window=2, seed=3, batch_size=29)
    ref, clean, corrupt = reference_trace(model, ps, Noise(samples=2), Candidates.resolve(model),
                                          kinds=KINDS, window=2, seed=3)
    got = engine_cells(result)
    assert len(ref) == len(got)
    assert max(abs(got[k] - v) for k, v in ref.items()) <= 1e-4
    assert np.allclose(result.prompts["clean"], clean, atol=1e-4)
    assert np.allclose(result.prompts["corrupt"], corrupt, atol=1e-4)


def contrast_trace_equals_reference(model):
    c = interp.contrast("misgendering")
    ps = c.prompts(model, "test")
    ps = ps.filter(lambda p: p.declared in ("xe", "she") and p.slot == "nom")[:2]
    forms = [model.tokenizer(" " + f, add_special_tokens=False)["input_ids"]
             for f in c.forms("nom").values()]
    assert max(map(len, forms)) > 1, "the check needs a form of several tokens"
    result = interp.trace(model, ps, contrast=c, kinds=KINDS, samples=2, window=2, seed=3)
    got = engine_cells(result)
    keys = sorted(got)
    picked = {keys[i] for i in np.random.default_rng(0).choice(len(keys), 24, replace=False)}
    ref, clean, _ = reference_contrast_trace(model, ps, Noise(samples=2), c, kinds=KINDS,
                                             window=2, seed=3, cells=picked)
    assert max(abs(got[k] - v) for k, v in ref.items()) <= 1e-4
    assert np.allclose(result.prompts["clean"], clean, atol=1e-4)


def scorers_equal_plain_forwards(model):
    tok = model.tokenizer
    ids = [tok(t)["input_ids"] for t in TEXTS]
    with torch.no_grad():
        plain = [model.hf(torch.tensor([i])).logits[0].float().log_softmax(-1) for i in ids]
    last = last_token_logprobs(model, ids, batch_size=8)
    assert torch.allclose(last, torch.stack([p[-1] for p in plain]), atol=1e-4)
    # Each text split into context + continuation, and head + tail + continuation.
    cut = [(i[:3], i[3:5], i[5:]) for i in ids]
    expected = [p[[*range(4, len(i) - 1)], i[5:]].double().numpy() for p, i in zip(plain, ids)]
    got = continuation_token_logprobs(model, [h + t for h, t, _ in cut], [c for *_, c in cut])
    staged = staged_continuation_token_logprobs(model, [h for h, _, _ in cut],
                                                [t for _, t, _ in cut], [c for *_, c in cut])
    for e, g, s in zip(expected, got, staged):
        assert np.allclose(g, e, atol=1e-4) and np.allclose(s, e, atol=1e-4)


def edit_reaches_targets_and_reverts(model, tmp_path):
    ps = P.from_templates(model, ["The {} said that", "After the meeting, the {} explained that"],
                          ["nurse", "carpenter", "teacher"])
    edit = interp.lsdm(model, ps, layers=[1, 2], attn_layers=[2], lam=0.1, tol=0.005, iters=10,
                       stats_tokens=1500, preserve=None, strict=False, progress=False)
    # The weights make (nearly) all of the stream change the targets ask for at the top edited
    # layer, and with it the balance of he and she on the fitted prompts.
    reached = edit.meta["targets_reached"]
    assert reached["miss"] < 0.05 and abs(reached["along"] - 1) < 0.05
    fitted = edit.meta["fitted_prompts"]["abs_logodds"]
    assert fitted["after"] < 0.15 * fitted["before"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with edit.applied(model):
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert len(changed) == 3  # two MLP down projections, one attention output projection
        edited = last_token_logprobs(model, [model.tokenizer(t)["input_ids"] for t in TEXTS])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    again = Edit.load(edit.save(tmp_path / "edit.safetensors"))
    assert again.meta == edit.meta and again.sites() == edit.sites()
    with again.applied(model):
        assert torch.equal(edited, last_token_logprobs(
            model, [model.tokenizer(t)["input_ids"] for t in TEXTS]))
    return edit, edited


def contrast_edit_reaches_targets_and_reverts(model):
    c = interp.contrast("misgendering")
    ps = c.prompts(model, "train").filter(lambda p: p.declared in ("xe", "they"))[:6]
    # A small change (clamp_norm), so that a post-norm family's carry-back through its norm
    # is in its linear range: the check is that the solve makes the change asked for.
    edit = interp.lsdm(model, ps, contrast=c, layers=[1, 2], attn_layers=[2], lam=0.1,
                       iters=4, clamp_norm=0.05, stats_tokens=1500, strict=False,
                       progress=False)
    reached = edit.meta["targets_reached"]
    assert reached["miss"] < 0.05 and abs(reached["along"] - 1) < 0.05
    lean = edit.meta["fitted_prompts"]["lean"]
    assert lean["after"] > lean["before"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with edit.applied(model):
        assert not all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def exports_reload_with_the_edited_logits(model, edit, edited, tmp_path):
    from transformers import AutoModelForCausalLM

    ids = [model.tokenizer(t)["input_ids"] for t in TEXTS]

    def logprobs(hf):
        with torch.no_grad():
            return torch.stack([hf(torch.tensor([i])).logits[0, -1].float().log_softmax(-1)
                                for i in ids])

    interp.export(model, tmp_path / "hf", "hf", edit=edit, verify=False)
    assert torch.allclose(logprobs(AutoModelForCausalLM.from_pretrained(tmp_path / "hf")),
                          edited, atol=1e-5)
    interp.export(model, tmp_path / "m.safetensors", "safetensors", edit=edit, verify=False)
    reloaded = reload_safetensors(tmp_path / "m.safetensors", {"dtype": torch.float32})
    assert torch.allclose(logprobs(reloaded), edited, atol=1e-5)
    if model.arch.model_type not in GGUF_ARCHITECTURES:
        with pytest.raises(UnsupportedExportError, match="format='hf' or 'safetensors'") as err:
            interp.export(model, tmp_path / "m.gguf", "gguf")
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", tiny_names())
def test_family_conformance(name, tmp_path):
    model = interp.load_model(name)
    assert model.arch.model_type == name.removeprefix("tiny-")
    hooks_mean_what_the_engines_assume(model)
    trace_equals_reference(model)
    contrast_trace_equals_reference(model)
    contrast_edit_reaches_targets_and_reverts(model)
    scorers_equal_plain_forwards(model)
    edit, edited = edit_reaches_targets_and_reverts(model, tmp_path)
    exports_reload_with_the_edited_logits(model, edit, edited, tmp_path)


def test_every_family_has_a_tiny_model_and_one_row():
    from interp.model.families import BY_MODEL_TYPE, FAMILIES

    names = [f.name for f in FAMILIES]
    assert len(names) == len(set(names))  # one row per family
    assert len(BY_MODEL_TYPE) == sum(len(f.model_types) for f in FAMILIES)  # a type in one row
    assert {"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "olmo", "olmo2",
            "gpt2", "gptj", "gpt_neox", "phi3"} <= set(names)
    assert len(tiny_names()) == sum(len(f.model_types) for f in FAMILIES)


def test_an_unknown_family_is_one_line_naming_the_known_ones():
    from transformers import BloomConfig

    with pytest.raises(interp.UnsupportedArchitectureError) as err:
        interp.model.arch.Architecture.from_config(BloomConfig())
    message = str(err.value)
    assert "'bloom' is not supported" in message and "\n" not in message
    for known in ("llama", "gemma3_text", "gpt_neox", "olmo2", "phi3"):
        assert known in message


def test_post_norm_outputs_refuse_a_linear_fold():
    """A projection of a component's output, or a representation edit folded into its weight,
    is a linear change of the output: behind a norm the stream would not see it."""
    from interp.mitigate.project import project

    model = interp.load_model("tiny-olmo2")
    ps = P.from_templates(model, ["The {} said that"], ["nurse", "carpenter", "teacher"])
    with pytest.raises(interp.EditError, match="mlp 2 pass a norm before the residual stream"):
        project(model, ps, layers=[2])
    steer = interp.alignez(model, ["The nurse said that she", "The chef said that she"],
                           ["The nurse said that he", "The chef said that he"],
                           layers=[1], site="attn", center=False)
    with pytest.raises(interp.EditError, match="attn 1 pass a norm"):
        steer.to_edit(model)


def test_wrap_takes_a_model_already_in_memory(tokenizer):
    """A model loaded by hand (here as a GGUF load leaves it: no `architectures` in its
    config) goes through the loop as it is: its dtype and device kept, its outputs unchanged."""
    from interp.model.tiny import tiny_model

    hf = tiny_model("gemma3_text", tokenizer, seed=1, dtype=torch.float64)
    hf.config.architectures = None
    ids = [tokenizer(t)["input_ids"] for t in TEXTS]
    with torch.no_grad():
        plain = torch.stack([hf(torch.tensor([i])).logits[0, -1].log_softmax(-1) for i in ids])
    model = interp.wrap(hf, tokenizer, name="my-gemma")
    assert model.name == "my-gemma" and model.dtype == torch.float64
    assert model.arch.model_type == "gemma3_text" and model.source == {"kind": "memory"}
    assert torch.allclose(last_token_logprobs(model, ids).double(), plain, atol=1e-6)
    result = interp.trace(model, P.from_templates(model, ["The {} said that"], ["nurse"]),
                          kinds=("mlp",), samples=1)
    assert len(result.frame) > 0
    with pytest.raises(interp.ModelLoadError, match="takes a transformers causal LM"):
        interp.wrap(torch.nn.Linear(2, 2), tokenizer)


@pytest.mark.parametrize("name", ["tiny-gemma3_text", "tiny-gpt_neox"])
def test_the_loop_runs_on_post_norm_and_parallel_families(name):
    """Verify, the studies and the trained baselines on the two block shapes the bundled model
    lacks (the conformance test holds their engines to plain forwards)."""
    import pandas as pd

    from interp.mitigate.finetune import finetune
    from interp.studies import audit_items as A
    from interp.studies import stories as S

    model = interp.load_model(name)
    ps = P.professions(model, "train", templates=P.TEMPLATES[:1])[:6]
    located = interp.trace(model, ps, kinds=("mlp", "attn"), samples=1, progress=False)
    edit = interp.lsdm(model, ps, layers=[2], attn_layers=[3], stats_tokens=1000, strict=False,
                       progress=False)
    check = interp.verify(model, edit, located, suites=("occupations",), n_boot=20,
                          occupations=P.professions(model, "test", templates=P.TEMPLATES[:1])[:6])
    assert len(check.after_trace.frame) == len(located.frame)
    audit = interp.reward_audit(model, model, A.disclosure(names=("Alex",)).iloc[:4], edit=edit,
                                n_boot=20)
    assert len(audit.frame) == 4
    judged = interp.story_consistency(model, S.resolve("ours").iloc[:4], n_boot=20)
    assert len(judged.frame) == 4
    prefs = pd.DataFrame({"prompt": ["The nurse said that"] * 2, "chosen": [" she", " he"],
                          "rejected": [" he", " she"]})
    tuned = interp.dpo(model, prefs, layers=[1], attn_layers=[1], epochs=1)
    ft = finetune(model, ps, layers=[2], steps=2, progress=False)
    for e in (tuned, ft):
        with e.applied(model):
            pass
