"""The model families interp supports, one row each (see base.Family for what a row states), and
the lookup from an HF config's `model_type` to its row.

A row holds only what differs from base.Family's defaults (pre-norm blocks under `layers`, no
learned positions, a gated MLP, no GGUF layout); its comment says what else is particular to the
family and why the row needs nothing for it.
"""

from __future__ import annotations

from .base import POST_NORMS, Family

FAMILIES: tuple[Family, ...] = (
    # Pre-norm: attention's o_proj and the MLP's down_proj write to the stream.
    Family("llama", ("llama",), gguf="llama"),
    # Llama's layout; llama.cpp runs it as llama (same tensors, same rotary layout).
    Family("mistral", ("mistral",), gguf="llama"),
    # Qwen 2 / 2.5: Llama's layout with biases on q, k and v (not on the edited o_proj).
    Family("qwen2", ("qwen2",)),
    # Qwen 3: Llama's layout with RMS norms on queries and keys, inside attention before o_proj,
    # so the edited map is unchanged.
    Family("qwen3", ("qwen3",)),
    # Gemma 1: pre-norm; the √d_model embedding scale is applied inside the embedding module, so
    # the stream entering block 0 already carries it.
    Family("gemma", ("gemma",)),
    # Gemma 2: attention and MLP outputs pass an RMS norm (post_attention_layernorm,
    # post_feedforward_layernorm) before they join the stream; soft-capped logits; layers
    # alternate sliding-window and full attention (`config.layer_types`).
    Family("gemma2", ("gemma2",), out_norms=POST_NORMS),
    # Gemma 3 (text): Gemma 2's post-norms, RMS norms on queries and keys, and sliding-window
    # layers with their own rotary base (`config.layer_types`).
    Family("gemma3", ("gemma3_text",), out_norms=POST_NORMS),
    # OLMo 1: Llama's layout with non-parametric layer norms (pre-norm).
    Family("olmo", ("olmo",)),
    # OLMo 2: no norm before attention or the MLP; each output passes an RMS norm
    # (post_attention_layernorm, post_feedforward_layernorm) before it joins the stream.
    Family("olmo2", ("olmo2",), out_norms=POST_NORMS),
    # Phi-3: pre-norm with fused qkv_proj and gate_up_proj; the edited o_proj and down_proj are
    # plain linears into the stream.
    Family("phi3", ("phi3",)),
    # GPT-2: blocks under `h`, learned positions (`wpe`) added inside the body, Conv1D
    # projections (weights stored (in, out)), a GELU MLP without a gate.
    Family("gpt2", ("gpt2",), blocks="h", positions="wpe", gated_mlp=False),
    # GPT-J: parallel blocks under `h` (attention and the MLP read the same normed input and
    # both add to the stream), partial rotary positions, no gate.
    Family("gptj", ("gptj",), blocks="h", parallel=True, gated_mlp=False),
    # GPT-NeoX / Pythia: parallel when `use_parallel_residual` is set (Pythia's default), each
    # of attention and the MLP reading the stream through its own norm; no gate.
    Family("gpt_neox", ("gpt_neox",), parallel=True, parallel_flag="use_parallel_residual",
           gated_mlp=False),
)

BY_MODEL_TYPE: dict[str, Family] = {mt: f for f in FAMILIES for mt in f.model_types}


def known_model_types() -> tuple[str, ...]:
    return tuple(BY_MODEL_TYPE)


def family_of(model_type: str | None) -> Family | None:
    return BY_MODEL_TYPE.get(model_type)
