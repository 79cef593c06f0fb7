"""The least-squares solve of an edit: ΔW = R Kᵀ (λC + K Kᵀ)⁻¹, in float64, factored.
"""

from __future__ import annotations

import torch

from .edit import EditError


def condition_number(A: torch.Tensor, L: torch.Tensor, iters: int = 50) -> float:
    """λ_max / λ_min of a symmetric positive definite A with Cholesky factor L, estimated by
    power iteration on A and on A⁻¹: a few hundred matrix-vector products where a full
    eigendecomposition (about a second at d_mlp = 1536) would cost more than the solve."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(A.shape[0], 1, generator=g, dtype=A.dtype).to(A.device)
    y = x.clone()
    top = bottom = torch.ones((), dtype=A.dtype)
    for _ in range(iters):
        x = A @ x
        top = x.norm()
        x = x / top
        y = torch.cholesky_solve(y, L)
        bottom = y.norm()
        y = y / bottom
    return float(top * bottom)


def solve_update(keys: torch.Tensor, residuals: torch.Tensor, C: torch.Tensor, lam: float,
                 max_cond: float = 1e12) -> tuple[torch.Tensor, torch.Tensor]:
    """ΔW = R Kᵀ (λC + K Kᵀ)⁻¹ in factored form (U, V) with ΔW = U Vᵀ.

    keys: (d_in, n) columns k_i; residuals: (d_out, n) columns r_i; C: (d_in, d_in)."""
    K, R, C = keys.double(), residuals.double(), C.double().to(keys.device)
    A = lam * C + K @ K.T
    L, info = torch.linalg.cholesky_ex(A)
    cond = condition_number(A, L) if int(info) == 0 else float("inf")
    if cond > max_cond:
        raise EditError(
            f"the key statistics are ill-conditioned (condition number of λC + KKᵀ about "
            f"{cond:.3g}): raise λ (now {lam}) or compute the statistics over more tokens"
        )
    V = torch.cholesky_solve(K, L)  # (d_in, n): A⁻¹ K, so ΔW = R (A⁻¹K)ᵀ
    return R, V
