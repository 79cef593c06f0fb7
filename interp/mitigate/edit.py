"""`Edit`: per-layer low-rank weight updates with provenance; apply, revert, save, load.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..common.errors import InterpError
from ..common.io import atomic_path


class EditError(InterpError):
    """An edit cannot be fitted or applied as asked."""


@dataclass
class Edit:
    """Per-layer low-rank weight updates ΔW_l = U_l V_lᵀ of the MLP down projections, plus
    provenance (`meta`): the model fingerprint it was fitted on, layers, λ, prompts, seeds,
    metrics."""

    updates: dict[int, tuple[torch.Tensor, torch.Tensor]]
    meta: dict = field(default_factory=dict)
    _backups: dict = field(default_factory=dict, repr=False)

    @property
    def layers(self) -> list[int]:
        return sorted(self.updates)

    def delta(self, layer: int) -> torch.Tensor:
        U, V = self.updates[layer]
        return U.double() @ V.double().T

    def __repr__(self) -> str:
        ranks = {l: self.updates[l][0].shape[1] for l in self.layers}
        return (f"Edit(layers={self.layers}, rank per layer={ranks}, λ={self.meta.get('lam')}, "
                f"fitted on {self.meta.get('fingerprint', '?')[:12]})")

    def apply(self, model):
        """Add the updates to the model's weights in place; returns the model."""
        if id(model) in self._backups:
            raise EditError("this edit is already applied to this model; revert it first")
        want, have = self.meta.get("fingerprint"), model.fingerprint()
        if want and want != have:
            raise EditError(
                f"this edit was fitted on a model with fingerprint {want}, but this model has "
                f"{have}: apply it to the model it was made for (revert any other edit first)"
            )
        backup = {}
        with torch.no_grad():
            for layer in self.layers:
                w = model.arch.mlp_down_weight(model.bridge, layer)
                backup[layer] = w.detach().clone()
                w.add_(self.delta(layer).to(device=w.device, dtype=w.dtype))
        self._backups[id(model)] = backup
        return model

    def is_applied(self, model) -> bool:
        """Whether this edit is applied to `model` now (by `apply`, not yet reverted)."""
        return id(model) in self._backups

    def revert(self, model):
        """Restore the weights exactly as they were before `apply`."""
        backup = self._backups.pop(id(model), None)
        if backup is None:
            raise EditError("this edit is not applied to this model")
        with torch.no_grad():
            for layer, saved in backup.items():
                model.arch.mlp_down_weight(model.bridge, layer).copy_(saved)
        return model

    @contextlib.contextmanager
    def applied(self, model):
        self.apply(model)
        try:
            yield model
        finally:
            self.revert(model)

    def save(self, path: str | Path) -> Path:
        """One safetensors file: U_l and V_l per layer, the provenance as its JSON metadata."""
        from safetensors.torch import save_file


        tensors = {}
        for layer, (U, V) in self.updates.items():
            tensors[f"layer{layer}.U"] = U.contiguous()
            tensors[f"layer{layer}.V"] = V.contiguous()
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"interp_edit": json.dumps(self.meta)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Edit":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["interp_edit"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        layers = sorted({int(k.split(".")[0][5:]) for k in tensors})
        return cls({l: (tensors[f"layer{l}.U"], tensors[f"layer{l}.V"]) for l in layers}, meta)
