"""What an adapter says about one model family, and the defaults most decoders share.

A family is described by facts, not code paths: where its blocks live on the HF body, whether it
adds learned position embeddings to the stream, which norm (if any) each component's output
passes before it joins the residual stream, whether attention and MLP run in parallel, and
whether its logits are soft-capped. Everything else (hook names, the edited weights) comes from
TransformerBridge, which names every supported family's modules the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    # The attribute of the HF body (`model.base_model`) that holds its block list.
    blocks: str = "layers"
    # A learned position embedding the HF body adds to `inputs_embeds` itself (GPT-2's `wpe`):
    # the stream entering block 0 includes it, and a resumed forward must take it out first.
    positions: str | None = None
    # Per component, the bridge name of the norm its output passes before it is added to the
    # residual stream (Gemma 2/3 and OLMo 2: `ln1_post` after attention, `ln2_post` after the
    # MLP); empty for pre-norm blocks, where the output projection writes to the stream itself.
    out_norms: dict = field(default_factory=dict)
    # Attention and MLP read the same block input and their outputs are summed (GPT-J; GPT-NeoX
    # when its config's `use_parallel_residual` is set: see `is_parallel`).
    parallel: bool = False
    parallel_flag: str | None = None
    gated_mlp: bool = True
    # The llama.cpp architecture a GGUF export of this family is written as (None: no GGUF).
    gguf: str | None = None

    def is_parallel(self, config) -> bool:
        if self.parallel_flag is not None:
            return bool(getattr(config, self.parallel_flag, self.parallel))
        return self.parallel

    def sizes(self, config) -> dict:
        """The shape facts of `config` (HF configs map hidden_size, num_attention_heads and
        num_hidden_layers onto their own names, e.g. GPT-2's n_embd, n_head, n_layer)."""
        d_model = config.hidden_size
        n_heads = config.num_attention_heads
        d_mlp = (getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None)
                 or 4 * d_model)
        return {
            "n_layers": config.num_hidden_layers,
            "d_model": d_model,
            "d_mlp": d_mlp,
            "n_heads": n_heads,
            "n_kv_heads": getattr(config, "num_key_value_heads", None) or n_heads,
            "d_head": getattr(config, "head_dim", None) or d_model // n_heads,
            "vocab_size": config.vocab_size,
        }


# The bridge names of the post-norms of Gemma 2/3 and OLMo 2 (TransformerLens's adapters).
POST_NORMS = {"attn": "ln1_post", "mlp": "ln2_post"}
