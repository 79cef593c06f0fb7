"""Architecture adapters: where each mediator lives in a supported model.

Later stages (tracing, editing, export) never guess module paths; they ask the adapter. Hook names
come from TransformerBridge, which gives every supported architecture the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..common.errors import InterpError, UnsupportedArchitectureError

# HF `model_type`s whose module layout we know, grouped by family.
LLAMA_FAMILY = ("llama", "mistral", "qwen2")
GPT2_FAMILY = ("gpt2",)

# Mediator kinds a trace can restore, and the bridge hook that carries each.
HOOKS = {
    "resid": "blocks.{layer}.hook_resid_pre",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "mlp": "blocks.{layer}.hook_mlp_out",
    "attn": "blocks.{layer}.hook_attn_out",
    "head": "blocks.{layer}.attn.hook_z",  # per-head output before the output projection
    "mlp_key": "blocks.{layer}.mlp.out.hook_in",  # input of the MLP down projection (LSDM key)
}

# Components an edit can change, each a linear map into the residual stream: the MLP down
# projection and the attention output projection. The key is that map's input (per head for
# attention, (…, heads, d_head), read flattened: exactly the output projection's input).
COMPONENTS = {"mlp": "mlp_key", "attn": "head"}


@dataclass(frozen=True)
class Architecture:
    """Shape facts and mediator locations of one loaded model."""

    family: str
    model_type: str
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_kv_heads: int
    d_head: int
    vocab_size: int
    gated_mlp: bool
    tied_embeddings: bool

    @classmethod
    def from_config(cls, config) -> "Architecture":
        """Read an HF config; raise `UnsupportedArchitectureError` for an unknown family."""
        mt = getattr(config, "model_type", None)
        if mt in LLAMA_FAMILY:
            n_heads = config.num_attention_heads
            return cls(
                family="llama",
                model_type=mt,
                n_layers=config.num_hidden_layers,
                d_model=config.hidden_size,
                d_mlp=config.intermediate_size,
                n_heads=n_heads,
                n_kv_heads=getattr(config, "num_key_value_heads", None) or n_heads,
                d_head=getattr(config, "head_dim", None) or config.hidden_size // n_heads,
                vocab_size=config.vocab_size,
                gated_mlp=True,
                tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
            )
        if mt in GPT2_FAMILY:
            return cls(
                family="gpt2",
                model_type=mt,
                n_layers=config.n_layer,
                d_model=config.n_embd,
                d_mlp=config.n_inner or 4 * config.n_embd,
                n_heads=config.n_head,
                n_kv_heads=config.n_head,
                d_head=config.n_embd // config.n_head,
                vocab_size=config.vocab_size,
                gated_mlp=False,
                tied_embeddings=bool(getattr(config, "tie_word_embeddings", True)),
            )
        known = ", ".join(LLAMA_FAMILY + GPT2_FAMILY)
        raise UnsupportedArchitectureError(
            f"architecture {mt!r} is not supported: interp knows where the MLP and attention live "
            f"only for these model types: {known}. Use a model of one of these families, or add "
            "an adapter for yours in interp/model/arch.py."
        )

    def hook(self, kind: str, layer: int) -> str:
        """Bridge hook name of mediator `kind` at `layer`."""
        if kind not in HOOKS:
            raise InterpError(f"unknown mediator kind {kind!r}; choose one of {sorted(HOOKS)}")
        self.check_layer(layer)
        return HOOKS[kind].format(layer=layer)

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise InterpError(
                f"layer {layer} is outside the model: it has layers 0..{self.n_layers - 1}"
            )

    def mlp_down(self, bridge, layer: int) -> nn.Module:
        """The real MLP down-projection module (nn.Linear, or GPT-2's Conv1D) at `layer`."""
        self.check_layer(layer)
        return bridge.blocks[layer].mlp.out.original_component

    def check_component(self, component: str) -> None:
        if component not in COMPONENTS:
            raise InterpError(f"unknown edit component {component!r}; choose one of "
                              f"{sorted(COMPONENTS)}")

    def key_hook(self, component: str, layer: int) -> str:
        """Bridge hook of the input of `component`'s output map at `layer` (an edit's key)."""
        self.check_component(component)
        return self.hook(COMPONENTS[component], layer)

    def key_width(self, component: str) -> int:
        self.check_component(component)
        return self.d_mlp if component == "mlp" else self.n_heads * self.d_head

    def out_proj(self, bridge, component: str, layer: int) -> nn.Module:
        """The real module that maps `component`'s key into the residual stream at `layer`."""
        self.check_component(component)
        if component == "mlp":
            return self.mlp_down(bridge, layer)
        self.check_layer(layer)
        return bridge.blocks[layer].attn.o.original_component

    def edit_weight(self, bridge, component: str, layer: int) -> torch.Tensor:
        """`component`'s output map at `layer` as a (d_model, key width) view of the live
        parameter: W in `out = W @ key`. Writing into it edits the model."""
        module = self.out_proj(bridge, component, layer)
        # nn.Linear stores (out, in); GPT-2's Conv1D stores (in, out).
        return module.weight if isinstance(module, nn.Linear) else module.weight.T

    def mlp_down_weight(self, bridge, layer: int) -> torch.Tensor:
        """The down-projection weight as a (d_model, d_mlp) view: W in `out = W @ key`.

        It is a view of the live parameter, so writing into it edits the model.
        """
        return self.edit_weight(bridge, "mlp", layer)
