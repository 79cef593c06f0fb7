"""Architecture: the shape and mediator locations of one loaded model, read through its family's
adapter (its row in `interp/model/families/`).

Later stages (tracing, editing, export) never guess module paths; they ask this object. Hook names
come from TransformerBridge, which gives every supported architecture the same names: in every
family `hook_mlp_out` / `hook_attn_out` are what the component adds to the residual stream
(after its post-norm where it has one), and `mlp.out` / `attn.o` are the output projections an
edit changes (tests/test_families.py checks both for every family).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..common.errors import InterpError, UnsupportedArchitectureError
from .families import Family, family_of, known_model_types

# Mediator kinds a trace can restore, and the bridge hook that carries each.
HOOKS = {
    "resid": "blocks.{layer}.hook_resid_pre",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "mlp": "blocks.{layer}.hook_mlp_out",
    "attn": "blocks.{layer}.hook_attn_out",
    "head": "blocks.{layer}.attn.hook_z",  # per-head output before the output projection
    "mlp_key": "blocks.{layer}.mlp.out.hook_in",  # input of the MLP down projection (LSDM key)
    # What the output projections write, before any post-norm (equal to hook_mlp_out /
    # hook_attn_out in pre-norm families).
    "mlp_write": "blocks.{layer}.mlp.out.hook_out",
    "attn_write": "blocks.{layer}.attn.o.hook_out",
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
    parallel: bool = False  # attention and MLP read the same input (GPT-J, GPT-NeoX)
    adapter: Family = field(default=None, repr=False, compare=False)

    @classmethod
    def from_config(cls, config) -> "Architecture":
        """Read an HF config; raise `UnsupportedArchitectureError` for an unknown family."""
        mt = getattr(config, "model_type", None)
        adapter = family_of(mt)
        if adapter is None:
            raise UnsupportedArchitectureError(
                f"architecture {mt!r} is not supported: interp knows where the MLP and attention "
                f"live only for these model types: {', '.join(known_model_types())}. Use a model "
                "of one of these families, or add a row for yours to interp/model/families/."
            )
        return cls(family=adapter.name, model_type=mt, **adapter.sizes(config),
                   gated_mlp=adapter.gated_mlp,
                   tied_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
                   parallel=adapter.is_parallel(config), adapter=adapter)

    @property
    def post_norm(self) -> dict:
        """{component: bridge name of the norm on its output} where outputs are normalised
        before they join the stream (Gemma 2/3, OLMo 2); empty for pre-norm families."""
        return dict(self.adapter.out_norms)

    def blocks(self, hf) -> nn.ModuleList:
        """The HF body's list of blocks (bridged modules: hooks on the bridge fire in them)."""
        return getattr(hf.base_model, self.adapter.blocks)

    def out_norm(self, bridge, component: str, layer: int) -> nn.Module | None:
        """The norm `component`'s output passes at `layer` before the stream, or None."""
        self.check_component(component)
        self.check_layer(layer)
        name = self.adapter.out_norms.get(component)
        return None if name is None else getattr(bridge.blocks[layer], name).original_component

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

    def edit_parameter(self, bridge, component: str, layer: int) -> tuple[nn.Parameter, bool]:
        """The parameter behind `edit_weight` (what an optimizer steps), and whether it is
        stored transposed, (key width, d_model), as GPT-2's Conv1D stores it."""
        module = self.out_proj(bridge, component, layer)
        return module.weight, not isinstance(module, nn.Linear)

    def mlp_down_weight(self, bridge, layer: int) -> torch.Tensor:
        """The down-projection weight as a (d_model, d_mlp) view: W in `out = W @ key`.

        It is a view of the live parameter, so writing into it edits the model.
        """
        return self.edit_weight(bridge, "mlp", layer)
