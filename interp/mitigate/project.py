"""Projection baselines: remove a bias direction from the located outputs (DAMA-style weight
edit) or from the residual stream at inference (a steering edit).

Both find their direction the way DAMA's partial least squares does, from the model's own
outputs on the fitting prompts: the direction u of a component's output (or the stream) at the
prompt's last token whose projection covaries most with the prompt's signed log-odds
log p(she) − log p(he), u ∝ Σ_i (o_i − ō)(y_i − ȳ).

- `project` replaces each located output map W by (I − u uᵀ) W: a rank-one `Edit` per site that
  applies, saves and exports like LSDM's. The projection is linear, so it also removes the mean
  of the output along u: where that mean is large, every prompt moves the same way.
- `steer` keeps the mean: at inference it replaces the stream h entering `layer`, at every
  position, by h − α ((h − μ)·u) u, with μ its mean over the fitting prompts. It is affine, so it
  cannot be folded into a weight without a bias the Llama blocks lack: a `Steering` is applied
  through a forward pre-hook on that block and is not exportable.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..measure.metrics import Candidates
from ..measure.prompts import PromptSet
from ..model.forward import last_token_logprobs
from ..model.runner import BLOCK_LISTS
from .edit import Edit, EditError, forward_order
from .keys import SubjectReader, versions


def _signed_logodds(model, prompts: PromptSet) -> torch.Tensor:
    ids = Candidates.resolve(model).ids
    lp = last_token_logprobs(model, [p.input_ids for p in prompts],
                             select=[ids["male"], ids["female"]], progress=False)
    return (lp[:, 1] - lp[:, 0]).double()


def bias_directions(model, prompts: PromptSet, hooks: dict) -> dict:
    """{key: (unit direction (d,), mean (d,))} for each named activation in `hooks` ({key: hook
    name}), read at every prompt's last token: the direction whose projection covaries most
    with the prompt's signed log-odds."""
    prompts.require_nonempty()
    y = _signed_logodds(model, prompts)
    reader = SubjectReader(model, versions(model, prompts, [], "last"))
    acts = reader.read(list(hooks.values()))
    out = {}
    for key, name in hooks.items():
        O = acts[name]
        mean = O.mean(0)
        u = (O - mean).T @ (y - y.mean())
        if float(u.norm()) == 0.0:
            raise EditError(f"no direction of {name} covaries with the prompts' bias: "
                            "fit on prompts whose pronoun lean varies")
        out[key] = ((u / u.norm()).float(), mean.float())
    return out


def project(model, prompts: PromptSet, *, layers: Sequence[int],
            attn_layers: Sequence[int] = ()) -> Edit:
    """DAMA-style: each located output map W becomes (I − u uᵀ) W, with u its output's bias
    direction on `prompts` (see `bias_directions`). Returns a rank-one `Edit` per site."""
    sites = forward_order(sorted(set(layers)), sorted(set(attn_layers)))
    if not sites:
        raise EditError("no layers to project: pass e.g. layers=[24, 25] or attn_layers=[26]")
    clock, fingerprint = time.perf_counter(), model.fingerprint()
    found = bias_directions(model, prompts, {s: model.arch.hook(*s) for s in sites})
    factors: dict[str, dict] = {"mlp": {}, "attn": {}}
    for (component, layer), (u, _) in found.items():
        w = model.arch.edit_weight(model.bridge, component, layer).detach().float()
        # ΔW = −u (Wᵀu)ᵀ
        factors[component][layer] = (-u[:, None].cpu(), (w.T @ u)[:, None].cpu())
    meta = {"method": "project", "fingerprint": fingerprint, "model": model.name,
            "layers": sorted(factors["mlp"]), "attn_layers": sorted(factors["attn"]),
            "n_prompts": len(prompts),
            "prompts": [{"text": p.text, "subject": p.subject} for p in prompts],
            "seconds": {"fit": round(time.perf_counter() - clock, 2)},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")}
    return Edit(factors["mlp"], meta, attn=factors["attn"])


@dataclass
class Steering:
    """h ← h − α ((h − μ)·u) u on the stream entering `layer`, at every position, while
    `applied`. Not a weight edit: see the module's docstring."""

    layer: int
    direction: torch.Tensor
    mean: torch.Tensor
    strength: float = 1.0
    meta: dict = field(default_factory=dict)
    _handles: dict = field(default_factory=dict, repr=False)

    def _hook(self, module, args, kwargs):
        u = self.direction.to(args[0].device if args else kwargs["hidden_states"].device)
        mu = self.mean.to(u.device)

        def ablate(h):
            return h - self.strength * ((h - mu) @ u)[..., None] * u

        if args:  # the stream is the block's first argument, by position or by name
            return (ablate(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": ablate(kwargs["hidden_states"])}

    def apply(self, model):
        if id(model) in self._handles:
            raise EditError("this steering is already applied to this model; revert it first")
        block = getattr(model.hf.base_model, BLOCK_LISTS[model.arch.family])[self.layer]
        self._handles[id(model)] = block.register_forward_pre_hook(self._hook, with_kwargs=True)
        return model

    def is_applied(self, model) -> bool:
        return id(model) in self._handles

    def revert(self, model):
        handle = self._handles.pop(id(model), None)
        if handle is None:
            raise EditError("this steering is not applied to this model")
        handle.remove()
        return model

    @contextlib.contextmanager
    def applied(self, model):
        self.apply(model)
        try:
            yield model
        finally:
            self.revert(model)


def steer(model, prompts: PromptSet, *, layer: int, strength: float = 1.0) -> Steering:
    """A `Steering` at the stream entering block `layer`, its direction and mean from `prompts`."""
    model.arch.check_layer(layer)
    clock = time.perf_counter()
    (u, mean), = bias_directions(model, prompts, {"resid": model.arch.hook("resid", layer)}
                                 ).values()
    meta = {"method": "steer", "fingerprint": model.fingerprint(), "model": model.name,
            "layer": layer, "strength": strength, "n_prompts": len(prompts),
            "seconds": {"fit": round(time.perf_counter() - clock, 2)}}
    return Steering(layer, u, mean, strength, meta)
