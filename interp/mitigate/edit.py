"""`Edit`: per-layer low-rank weight updates with provenance; apply, revert, save, load."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..common.errors import InterpError
from ..common.io import atomic_path

# How a file names each update: the MLP's as before attention edits existed ("layer3.U"), the
# attention output projection's with its component in front ("attn.layer3.U"). An update is
# stored as its factors U, V, or, where that is smaller, as the dense difference D = U Vᵀ in
# float64 (exactly what `delta` computes from the factors, so applying it is bit-identical).
TENSOR_NAME = re.compile(r"^(?:(attn)\.)?layer(\d+)\.([UVD])$")


class EditError(InterpError):
    """An edit cannot be fitted or applied as asked."""


def forward_order(mlp_layers, attn_layers) -> list[tuple[str, int]]:
    """(component, layer) of each edited weight in the order of the forward pass: bottom layer
    first, attention before the MLP of its block."""
    return sorted([("attn", l) for l in attn_layers] + [("mlp", l) for l in mlp_layers],
                  key=lambda s: (s[1], s[0] == "mlp"))


class Reversible:
    """apply / revert / is_applied / applied for a change that is put on a model and taken off
    exactly, once per model at a time. A subclass says how: `_put(model)` makes the change and
    returns what `_take(model, that)` needs to undo it; it keeps `_applied_to`, a dict field,
    and `meta`, whose "fingerprint" `check_model` holds the model to."""

    _noun = "edit"

    def check_model(self, model) -> None:
        """The model must carry the weights this change was made from (`meta["fingerprint"]`)."""
        want, have = self.meta.get("fingerprint"), model.fingerprint()
        if want and want != have:
            raise EditError(
                f"this {self._noun} was fitted on a model with fingerprint {want}, but this model "
                f"has {have}: apply it to the model it was made for (revert any other edit "
                "first)")

    def apply(self, model):
        """Make the change on `model` in place; returns the model."""
        if id(model) in self._applied_to:
            raise EditError(f"this {self._noun} is already applied to this model; revert it first")
        self._applied_to[id(model)] = self._put(model)
        return model

    def is_applied(self, model) -> bool:
        """Whether this change is on `model` now (by `apply`, not yet reverted)."""
        return id(model) in self._applied_to

    def revert(self, model):
        """Undo `apply` exactly; returns the model."""
        undo = self._applied_to.pop(id(model), None)
        if undo is None:
            raise EditError(f"this {self._noun} is not applied to this model")
        self._take(model, undo)
        return model

    @contextlib.contextmanager
    def applied(self, model):
        self.apply(model)
        try:
            yield model
        finally:
            self.revert(model)


@dataclass
class Edit(Reversible):
    """Per-layer low-rank weight updates ΔW_l = U_l V_lᵀ of the MLP down projections
    (`updates`) and of the attention output projections (`attn`), plus provenance (`meta`): the
    model fingerprint it was fitted on, layers, λ, prompts, seeds, metrics."""

    updates: dict[int, tuple[torch.Tensor, torch.Tensor]]
    meta: dict = field(default_factory=dict)
    _applied_to: dict = field(default_factory=dict, repr=False)
    attn: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        """The MLP layers the edit changes."""
        return sorted(self.updates)

    @property
    def attn_layers(self) -> list[int]:
        """The layers whose attention output projection the edit changes."""
        return sorted(self.attn)

    def sites(self) -> list[tuple[str, int]]:
        """(component, layer) of every changed weight, in the order of the forward pass."""
        return forward_order(self.updates, self.attn)

    def _factors(self, component: str) -> dict:
        return self.updates if component == "mlp" else self.attn

    def delta(self, layer: int, component: str = "mlp") -> torch.Tensor:
        """The change of `component`'s weight at `layer`, (d_out, d_in) in float64."""
        U, V = self._factors(component)[layer]
        if V is None:  # U is the dense update
            return U.double()
        # Contiguous first: BLAS rounds a product of transposed views differently, so a fresh
        # edit (whose solver returns views) and its saved copy would differ in the last bit.
        return U.double().contiguous() @ V.double().contiguous().T

    def __repr__(self) -> str:
        ranks = {f"{c} {l}": "dense" if f[1] is None else f[0].shape[1]
                 for c, l in self.sites() for f in [self._factors(c)[l]]}
        attn = f", attention layers={self.attn_layers}" if self.attn else ""
        method = self.meta.get("recipe", self.meta.get("method", "?"))
        lam = f", λ={self.meta['lam']}" if "lam" in self.meta else ""
        return (f"Edit({method}, layers={self.layers}{attn}, rank per layer={ranks}{lam}, "
                f"fitted on {self.meta.get('fingerprint', '?')[:12]})")

    def _put(self, model) -> dict:
        """Add the updates to the model's weights in place; returns the weights they replaced."""
        self.check_model(model)
        backup = {}
        with torch.no_grad():
            for component, layer in self.sites():
                w = model.arch.edit_weight(model.bridge, component, layer)
                backup[component, layer] = w.detach().clone()
                w.add_(self.delta(layer, component).to(device=w.device, dtype=w.dtype))
        return backup

    def _take(self, model, backup: dict) -> None:
        """Restore the weights exactly as they were before `apply`."""
        with torch.no_grad():
            for (component, layer), saved in backup.items():
                model.arch.edit_weight(model.bridge, component, layer).copy_(saved)

    def save(self, path: str | Path) -> Path:
        """One safetensors file: U and V per edited weight, the provenance as its metadata."""
        from safetensors.torch import save_file

        tensors = {}
        for component, layer in self.sites():
            prefix = "" if component == "mlp" else f"{component}."
            U, V = self._factors(component)[layer]
            factors = U.numel() * U.element_size() + (0 if V is None else
                                                      V.numel() * V.element_size())
            dense = U.shape[0] * (U.shape[1] if V is None else V.shape[0]) * 8
            if V is None or dense < factors:  # the smaller exact form
                tensors[f"{prefix}layer{layer}.D"] = self.delta(layer, component).contiguous()
            else:
                tensors[f"{prefix}layer{layer}.U"] = U.contiguous()
                tensors[f"{prefix}layer{layer}.V"] = V.contiguous()
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"interp_edit": json.dumps(self.meta)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Edit":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["interp_edit"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        factors: dict[str, dict[int, dict[str, torch.Tensor]]] = {"mlp": {}, "attn": {}}
        for name, t in tensors.items():
            m = TENSOR_NAME.match(name)
            if m is None:
                raise EditError(f"{path} holds a tensor {name!r} that is not an edit factor: "
                                "pass a file written by Edit.save")
            factors[m.group(1) or "mlp"].setdefault(int(m.group(2)), {})[m.group(3)] = t
        mlp, attn = ({l: (f["D"], None) if "D" in f else (f["U"], f["V"])
                      for l, f in factors[c].items()} for c in ("mlp", "attn"))
        return cls(mlp, meta, attn=attn)
