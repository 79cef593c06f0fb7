"""Summary numbers with 95% percentile-bootstrap intervals over a suite's items: means, group
differences, correlations (resampled jointly over the items).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .. import metrics


def put_mean(summary: dict, key: str, values, *, n_boot: int, seed: int,
             scale: float = 100.0) -> None:
    v = np.asarray(values, float) * scale
    ok = v[~np.isnan(v)]
    summary[key] = float(ok.mean()) if ok.size else float("nan")
    summary[f"{key}_lo"], summary[f"{key}_hi"] = metrics.bootstrap_ci(v, n_boot=n_boot,
                                                                      seed=seed)


def _bootstrap_stat(stat: Callable[[np.ndarray], np.ndarray], n: int, *, n_boot: int, seed: int,
                    level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of a statistic of the items that is not a plain mean. `stat` maps an
    (resamples, n) matrix of item indices to one value per resample; resamples where it is
    undefined (an empty group, a constant column) are left out."""
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    stats = stat(rng.integers(0, n, size=(n_boot, n)))
    stats = stats[np.isfinite(stats)]
    if not stats.size:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def put_stat(summary: dict, key: str, stat, n: int, *, n_boot: int, seed: int) -> None:
    summary[key] = float(stat(np.arange(n)[None])[0]) if n else float("nan")
    summary[f"{key}_lo"], summary[f"{key}_hi"] = _bootstrap_stat(stat, n, n_boot=n_boot,
                                                                 seed=seed)


def group_mean(values, mask, scale: float = 100.0):
    values, mask = np.asarray(values, float) * scale, np.asarray(mask, bool)

    def stat(idx):
        m = mask[idx]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (values[idx] * m).sum(1) / m.sum(1)
    return stat


def difference(stat_a, stat_b):
    return lambda idx: stat_a(idx) - stat_b(idx)


def pearson(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)

    def stat(idx):
        xs, ys = x[idx], y[idx]
        xs = xs - xs.mean(1, keepdims=True)
        ys = ys - ys.mean(1, keepdims=True)
        den = np.sqrt((xs ** 2).sum(1) * (ys ** 2).sum(1))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (xs * ys).sum(1) / den
        # fewer than 3 points always correlate perfectly: no evidence
        return np.where((den > 1e-12) & (len(x) >= 3), r, np.nan)
    return stat
