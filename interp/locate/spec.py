"""What determines a trace: the mediator kinds, the metric on last-token logits, and `TraceSpec`,
which lets a trace be re-run on edited weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..common.errors import InterpError
from ..measure.metrics import Candidates
from . import corruption as C

KINDS = ("resid", "mlp", "attn", "head")

WINDOWED = ("mlp", "attn")

METHODS = ("exact", "attribution")


@dataclass
class Metric:
    """fn maps next-token logits (rows, vocab), or only the logits of `tokens` when the metric
    needs no normalisation over the vocabulary, to one number per row."""

    fn: Callable
    tokens: list[int] | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.fn(logits)


def metric_fn(metric, candidates: Candidates) -> Metric:
    """The `Metric` for a metric name, or for a user callable on full logits (rows, vocab)."""
    he, she = candidates.ids["male"], candidates.ids["female"]
    if callable(metric):
        return Metric(metric)
    if metric == "logodds":  # log p(she) − log p(he): the normaliser cancels
        return Metric(lambda lg: lg[:, 1] - lg[:, 0], tokens=[he, she])

    def probs(logits):
        return logits.float().softmax(-1)

    table = {
        "gap": lambda lg: (lambda p: p[:, he] - p[:, she])(probs(lg)),
        "abs_gap": lambda lg: (lambda p: (p[:, he] - p[:, she]).abs())(probs(lg)),
        "p_male": lambda lg: probs(lg)[:, he],
        "p_female": lambda lg: probs(lg)[:, she],
    }
    if metric not in table:
        raise InterpError(f"unknown metric {metric!r}: use one of "
                          f"{sorted(table) + ['logodds']} or a callable")
    return Metric(table[metric])


@dataclass
class TraceSpec:
    kinds: tuple[str, ...] = ("resid", "mlp", "attn")
    corruption: dict = field(default_factory=lambda: {"type": "noise"})
    metric: str = "logodds"
    window: int = 1
    seed: int = 0
    method: str = "exact"
    model: str = ""
    fingerprint: str = ""
    contrast: dict | None = None  # the traced contrast (`Contrast.to_dict`), if any

    def to_dict(self) -> dict:
        d = {"kinds": list(self.kinds), "corruption": self.corruption, "metric": self.metric,
             "window": self.window, "seed": self.seed, "method": self.method,
             "model": self.model, "fingerprint": self.fingerprint}
        if self.contrast is not None:
            d["contrast"] = self.contrast
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TraceSpec":
        d = dict(d)
        d["kinds"] = tuple(d.get("kinds", ()))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def make_corruption(self):
        c = dict(self.corruption)
        kind = c.pop("type")
        if kind == "noise":
            return C.Noise(scale=c.get("scale", 3.0), samples=c.get("samples", 3))
        if kind == "swap":
            return C.Swap(c.get("words", ("person", "man", "woman")))
        raise InterpError(f"a {kind!r} corruption cannot be rebuilt from a spec; pass it again")


def window_layers(layer: int, window: int, n_layers: int) -> tuple[int, int]:
    """Layers [a, b] restored for a cell centred on `layer` (ROME's convention)."""
    a = max(0, layer - window // 2)
    b = min(n_layers, layer - (-window // 2)) - 1
    return a, max(a, b)
