"""Definitional gender accuracy: "The king said that" → he beats she, from the bias report's own
per-prompt numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import metrics
from .. import prompts as P
from ..bias import measure
from .result import CapabilityResult, model_meta


def definitional(model, prompts=None, *, batch_size: int = 64, n_boot: int = 1000,
                 seed: int = 0) -> CapabilityResult:
    """Share of definitional prompts ("The king said that") where the pronoun matching the
    subject's gender is likelier than the other, from `interp.measure.bias.measure` (the bias
    report's own per-prompt `definitional_correct`), with a bootstrap CI over prompts."""
    ps = P.definitional(model) if prompts is None else prompts
    frame = measure(model, ps, batch_size=batch_size)
    correct = frame["definitional_correct"].astype(float)
    lo, hi = metrics.bootstrap_ci(correct, n_boot=n_boot, seed=seed)
    keep = ["prompt_id", "text", "subject", "template", "expected", "p_male", "p_female",
            "definitional_correct"]
    items = frame[[c for c in keep if c in frame.columns]]
    extra = {"subjects": int(frame["subject"].nunique()),
             "mean_logodds_signed": float(_signed_logodds(frame).mean())}
    return CapabilityResult("definitional", "accuracy", float(correct.mean()), lo, hi,
                            int(correct.notna().sum()), items, extra, model_meta(model))


def _signed_logodds(frame: pd.DataFrame) -> pd.Series:
    """log p(right pronoun) − log p(wrong one): how firmly, not only whether, it is right."""
    sign = np.where(frame["expected"] == "female", 1.0, -1.0)
    return frame["logodds"] * sign
