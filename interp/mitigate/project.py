"""Projection baselines: erase a bias direction from the located outputs (DAMA-style weight
edit) or from the residual stream at inference (a steering edit).

Both find it from the model's own activations o_i at the last token of the fitting prompts and
the prompts' signed log-odds y_i = log p(she) − log p(he), and erase it the way LEACE does
(Belrose et al. 2023) for one concept: with c = Cov(o, y) and Σ = Cov(o), the change

    o ← o − c rᵀ (o − μ),   r = Σ⁻¹ c / (cᵀ Σ⁻¹ c)

leaves o with no covariance with y, changing it least in Σ's metric. Erasing along the bare
covariance direction c instead (c cᵀ/|c|², as a first version did) mostly removed the
high-variance dimensions c leans on and broke the model (docs/editing.md).

- `project` replaces each located output map W by (I − c rᵀ) W: a rank-one `Edit` per site that
  applies, saves and exports like LSDM's. It is linear, so it erases rᵀo around 0 rather than
  around its mean μ: every prompt also moves by c rᵀμ.
- `steer` keeps the mean: at inference it replaces the stream h entering `layer`, at every
  position, by h − α c rᵀ (h − μ). It is affine, so it cannot be folded into a weight without a
  bias the Llama blocks lack: a `Steering` is applied through a forward pre-hook on that block
  and is not exportable.

With a contrast other than he/she (`contrast=`), the concept erased is the prompts' preference
among the contrast's k groups: Y = each group's summed continuation log-probability minus the
first group's (k − 1 columns; two groups give the lean itself). LEACE's erasure for a
k − 1 dimensional concept is the same formula with matrices, C = Cov(o, Y) and
R = Σ⁻¹C (CᵀΣ⁻¹C)⁻¹, so the weight edit has rank k − 1. Any basis of the groups' differences
erases the same subspace. A "follow" contrast is refused: following the declared group needs
exactly what the projection would erase.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..measure.bias import measure
from ..measure.contrast import other_than_gender
from ..measure.prompts import PromptSet
from .edit import Edit, EditError, Reversible, forward_order
from .keys import SubjectReader, versions
from .lean import contrast_logprobs, prompts_to_fit
from .norms import require_linear


def concept(model, prompts: PromptSet, contrast=None) -> torch.Tensor:
    """What a projection erases, per prompt: the he/she log-odds (n,) for gender (contrast
    None), else (n, k − 1) each group's continuation log-probability minus the first group's."""
    c = other_than_gender(contrast)
    if c is None:
        return torch.tensor(measure(model, prompts, progress=False)["logodds"].to_numpy())
    if c.goal == "follow":
        raise EditError(f"a projection cannot follow the declared group of {c.name!r}: it erases "
                        "what tells the groups apart, which following needs; use lsdm or ft")
    lp = torch.tensor(contrast_logprobs(model, c, prompts), dtype=torch.float64)
    return lp[:, 1:] - lp[:, :1]


def bias_directions(model, prompts: PromptSet, hooks: dict, ridge: float = 1e-3, *,
                    contrast=None) -> dict:
    """{key: (c, r, μ)} for each named activation in `hooks` ({key: hook name}), read at every
    prompt's last token: the erasure direction c = Cov(o, y), the reading vector
    r = Σ⁻¹c / (cᵀΣ⁻¹c) (so rᵀc = 1) and the mean μ; Σ gets `ridge` × its mean variance on the
    diagonal. With a contrast of k > 2 groups y has k − 1 columns (`concept`) and c, r are
    (d, k − 1) matrices with rᵀc = I."""
    prompts.require_nonempty()
    y = concept(model, prompts, contrast)
    reader = SubjectReader(model, versions(model, prompts, [], "last"))
    acts = reader.read(list(hooks.values()))
    out = {}
    for key, name in hooks.items():
        O = acts[name]
        y = y.to(O.device)
        mean = O.mean(0)
        X = O - mean
        c = X.T @ (y - y.mean(0)) / len(y)
        if float(c.norm()) == 0.0:
            raise EditError(f"no direction of {name} covaries with the prompts' bias: "
                            "fit on prompts whose lean varies")
        S = X.T @ X / len(y)
        S = S + ridge * S.diagonal().mean() * torch.eye(len(S), dtype=S.dtype, device=S.device)
        r = torch.linalg.solve(S, c)
        r = r / (c @ r) if c.dim() == 1 else r @ torch.linalg.inv(c.T @ r)
        out[key] = (c.float(), r.float(), mean.float())
    return out


def columns(v: torch.Tensor) -> torch.Tensor:
    """A direction as a (d, k) matrix: a vector becomes one column."""
    return v[:, None] if v.dim() == 1 else v


def project(model, prompts: PromptSet | None = None, *, layers: Sequence[int],
            attn_layers: Sequence[int] = (), contrast=None) -> Edit:
    """DAMA-style: each located output map W becomes (I − c rᵀ) W, with c and r from its
    output's bias on `prompts` (see `bias_directions`). Returns a rank-one `Edit` per site
    (rank k − 1 for a contrast of k groups). contrast: another bias than he/she (a `Contrast`,
    a built-in's name or a file); prompts default to its train part."""
    c_other = other_than_gender(contrast)
    prompts = prompts_to_fit(model, prompts, c_other, "project")
    sites = forward_order(sorted(set(layers)), sorted(set(attn_layers)))
    if not sites:
        raise EditError("no layers to project: pass e.g. layers=[24, 25] or attn_layers=[26]")
    require_linear(model, sites, "project")
    clock, fingerprint = time.perf_counter(), model.fingerprint()
    found = bias_directions(model, prompts, {s: model.arch.hook(*s) for s in sites},
                            contrast=c_other)
    factors: dict[str, dict] = {"mlp": {}, "attn": {}}
    for (component, layer), (c, r, _) in found.items():
        w = model.arch.edit_weight(model.bridge, component, layer).detach().float()
        # ΔW = −c (Wᵀr)ᵀ
        factors[component][layer] = (-columns(c).cpu(), columns(w.T @ r.to(w.device)).cpu())
    meta = {"method": "project", "fingerprint": fingerprint, "model": model.name,
            "layers": sorted(factors["mlp"]), "attn_layers": sorted(factors["attn"]),
            "n_prompts": len(prompts), "contrast": c_other.name if c_other else "gender",
            "prompts": [{"text": p.text, "subject": p.subject} for p in prompts],
            "seconds": {"fit": round(time.perf_counter() - clock, 2)},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds")}
    return Edit(factors["mlp"], meta, attn=factors["attn"])


@dataclass
class Steering(Reversible):
    """h ← h − α c rᵀ(h − μ) on the stream entering `layer`, at every position, while
    `applied`. Not a weight edit: see the module's docstring."""

    layer: int
    direction: torch.Tensor  # c: (d,), or (d, k − 1) for a contrast of k groups
    reader: torch.Tensor  # r, shaped as c
    mean: torch.Tensor
    strength: float = 1.0
    meta: dict = field(default_factory=dict)
    _applied_to: dict = field(default_factory=dict, repr=False)
    _noun = "steering"

    def _hook(self, module, args, kwargs):
        c = self.direction.to(args[0].device if args else kwargs["hidden_states"].device)
        r, mu = self.reader.to(c.device), self.mean.to(c.device)

        def ablate(h):
            coef = (h - mu) @ r
            return h - self.strength * (coef[..., None] * c if c.dim() == 1 else coef @ c.T)

        if args:  # the stream is the block's first argument, by position or by name
            return (ablate(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": ablate(kwargs["hidden_states"])}

    def _put(self, model):
        """A forward pre-hook on the block: its handle undoes it."""
        block = model.arch.blocks(model.hf)[self.layer]
        return block.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _take(self, model, handle) -> None:
        handle.remove()


def steer(model, prompts: PromptSet | None = None, *, layer: int, strength: float = 1.0,
          contrast=None) -> Steering:
    """A `Steering` at the stream entering block `layer`, its direction and mean from `prompts`
    (default, with a contrast: its train part; see `project`)."""
    model.arch.check_layer(layer)
    c_other = other_than_gender(contrast)
    prompts = prompts_to_fit(model, prompts, c_other, "steer")
    clock = time.perf_counter()
    (c, r, mean), = bias_directions(model, prompts, {"resid": model.arch.hook("resid", layer)},
                                    contrast=c_other).values()
    meta = {"method": "steer", "fingerprint": model.fingerprint(), "model": model.name,
            "layer": layer, "strength": strength, "n_prompts": len(prompts),
            "contrast": c_other.name if c_other else "gender",
            "seconds": {"fit": round(time.perf_counter() - clock, 2)}}
    return Steering(layer, c, r, mean, strength, meta)
