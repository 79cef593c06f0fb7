"""Edits of outputs that pass a norm before they join the residual stream (Gemma 2/3, OLMo 2).

There a component adds y = g ⊙ x / ρ(x), ρ(x) = √(mean(x²) + ε), to the stream, where x = W k
is what its output projection writes. A change r wanted in the stream is carried back to the
change Δx of what the weight writes by damped Gauss–Newton on ‖norm(x + Δx) − (y + r)‖²: a few
steps of Δx ← Δx + (JᵀJ + μI)⁻¹ Jᵀ (residual), J = diag(g) (I − c cᵀ) / ρ the norm's Jacobian
(c = x / (√d ρ)). Two things are out of a post-normed output's reach, and the damping gives them
up instead of chasing them with huge changes of x: its length (the norm removes x's scale), and
directions the gain g nearly zeroes (Gemma 3 270M's post-norm gains run from 0.1 to 1,600, so
the plain inverse, (y + r)/g rescaled, changed x by 60% for a 1% change of y and missed it by
forty times). What a site leaves undone the sites above it take up (each solves for what is
left), and `lsdm` reports what remains at the top (`meta["target_miss"]`).
"""

from __future__ import annotations

import torch

from .edit import EditError


def rms_gain(norm) -> tuple[torch.Tensor, float]:
    """(g, ε) of an RMS norm y = g ⊙ x / √(mean(x²) + ε), read off the module itself (Gemma
    keeps g − 1 as its weight, OLMo 2 keeps g)."""
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
    weight = getattr(norm, "weight", None)
    if eps is None or weight is None:
        raise EditError(f"the norm on this component's output is a {type(norm).__name__}, not an "
                        "RMS norm interp knows how to edit through; edit another component, or "
                        "add its inverse in interp/mitigate/norms.py")
    d = weight.shape[-1]
    with torch.no_grad():
        ones = torch.ones(1, d, dtype=weight.dtype, device=weight.device)
        g = norm(ones)[0].double() * (1.0 + float(eps)) ** 0.5
    return g, float(eps)


def _normed(g, eps, x):
    return g[:, None] * x / ((x * x).mean(0, keepdim=True) + eps).sqrt()


def _gauss_newton_step(g, eps, x, e, damping):
    """(JᵀJ + μI)⁻¹ Jᵀ e per column of x (d, n), e (d, n), J the norm's Jacobian at x, in
    closed form: ρ²(JᵀJ + μI) = diag(g² + μρ²) + U W Uᵀ with U = [c, g²c] (Woodbury)."""
    d = x.shape[0]
    rho = ((x * x).mean(0) + eps).sqrt()  # (n,)
    c = x / (d ** 0.5 * rho)  # (d, n)
    g2 = (g * g)[:, None]
    mu_rho2 = damping * float((g * g).mean())  # μρ²: damping relative to the gain's scale
    b_inv = 1.0 / (g2 + mu_rho2)  # (d, 1)
    # ρ Jᵀ e = (I − c cᵀ)(g ⊙ e)
    ge = g[:, None] * e
    rhs = (ge - c * (c * ge).sum(0)) * rho  # ρ² · Jᵀe
    U = torch.stack([c, g2 * c], -1)  # (d, n, 2)
    a = (c * g2 * c).sum(0)  # cᵀ g² c
    w_inv = torch.zeros((x.shape[1], 2, 2), dtype=x.dtype, device=x.device)
    w_inv[:, 0, 1] = w_inv[:, 1, 0] = -1.0
    w_inv[:, 1, 1] = -a
    BU = b_inv[..., None] * U  # (d, n, 2)
    small = w_inv + torch.einsum("dni,dnj->nij", U, BU)  # (n, 2, 2)
    Brhs = b_inv * rhs
    t = torch.linalg.solve(small, torch.einsum("dni,dn->ni", U, Brhs))  # (n, 2)
    return Brhs - torch.einsum("dni,ni->dn", BU, t)


def pre_norm_change(norm, x: torch.Tensor, r: torch.Tensor, *, damping: float = 1e-3,
                    steps: int = 4) -> torch.Tensor:
    """The change of the pre-norm outputs x (d, n) whose normed outputs move by r (d, n) in the
    stream, as closely as the norm allows (see the module docstring). float64."""
    x, r = x.double(), r.double()
    g, eps = rms_gain(norm)
    g = g.to(x.device)
    y = _normed(g, eps, x)
    with torch.no_grad():
        y_module = norm(x.T.to(norm.weight.dtype)).double().T
    # (to the precision the module computes in: bf16 keeps about 3 significant digits)
    tol = max(1e-3, 4 * torch.finfo(norm.weight.dtype).eps)
    if (y_module - y).abs().max() > tol * (1.0 + y.abs().max()):
        raise EditError(f"the norm on this component's output ({type(norm).__name__}) does not "
                        "act as an RMS norm g ⊙ x / rms(x), so interp cannot carry an edit's "
                        "target through it; edit another component")
    goal = y + r
    dx = torch.zeros_like(x)
    for _ in range(steps):
        dx = dx + _gauss_newton_step(g, eps, x + dx, goal - _normed(g, eps, x + dx), damping)
    return dx


def require_linear(model, sites, method: str) -> None:
    """Raise when a site's output reaches the stream through a norm: `method` folds a linear map
    of the output into the weight, which the norm would undo (it is not linear)."""
    normed = [f"{c} {l}" for c, l in sites if model.arch.out_norm(model.bridge, c, l) is not None]
    if normed:
        raise EditError(
            f"{method} folds a linear change of a component's output into its weight, but in "
            f"{model.arch.model_type} the outputs of {', '.join(normed)} pass a norm before the "
            "residual stream, so the stream would not see that change: use interp.lsdm (it "
            "solves through the norm), finetune, or a hook (steer / alignez without to_edit)")
