"""Outcome measures over the next-token pronoun distribution, and bias scores over prompt sets.

Sign convention: the bundled stereotype and definitional scores are positive for male, so every
"gap" here is p(he) − p(she) (positive = leans male), except `logodds`, which follows the
tracing literature: log p(she) − log p(he).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..common.errors import TokenizationError

DEFAULT_CANDIDATES = {"male": " he", "female": " she", "neutral": " they"}
# The pronoun pair a slot is scored on: (male, female), one token each with its space.
SLOT_PRONOUNS = {"subject": (" he", " she"), "object": (" him", " her"),
                 "possessive": (" his", " her")}


@dataclass(frozen=True)
class Candidates:
    """Candidate next tokens (the pronouns), resolved to single token ids for one tokenizer."""

    words: dict
    ids: dict

    @classmethod
    def resolve(cls, model_or_tokenizer, words: dict | None = None) -> "Candidates":
        tokenizer = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
        words = dict(words or DEFAULT_CANDIDATES)
        ids = {}
        for role, word in words.items():
            pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
            if len(pieces) != 1:
                shown = [tokenizer.decode([p]) for p in pieces]
                raise TokenizationError(
                    f"candidate {word!r} ({role}) is {len(pieces)} tokens under this tokenizer "
                    f"{shown}, but a candidate must be exactly one token. Pick a word that is one "
                    "token (mind the leading space: ' she', not 'she')."
                )
            ids[role] = pieces[0]
        return cls(words=words, ids=ids)

    @property
    def roles(self) -> list[str]:
        return list(self.ids)

    @property
    def token_ids(self) -> list[int]:
        return list(self.ids.values())


# ---------------------------------------------------------------------------------------------
# Per-prompt outcome measures. Inputs are arrays of probabilities (or log-probabilities).


def logodds(logp_male, logp_female):
    """Signed log-odds log p(she) − log p(he): > 0 leans female, < 0 leans male."""
    return np.asarray(logp_female) - np.asarray(logp_male)


def gap(p_male, p_female):
    """p(he) − p(she): > 0 leans male."""
    return np.asarray(p_male) - np.asarray(p_female)


def abs_gap(p_male, p_female):
    """|p(he) − p(she)|."""
    return np.abs(gap(p_male, p_female))


def normalised_gap(p_male, p_female):
    """(p(he) − p(she)) / (p(he) + p(she)), in [-1, 1]: the gap among the gendered candidates."""
    p_male, p_female = np.asarray(p_male), np.asarray(p_female)
    return (p_male - p_female) / (p_male + p_female)


def _stereo_anti(p_male, p_female, stereotypical):
    p_male, p_female = np.asarray(p_male, float), np.asarray(p_female, float)
    s = np.sign(np.asarray(stereotypical, float))
    stereo = np.where(s > 0, p_male, np.where(s < 0, p_female, np.nan))
    anti = np.where(s > 0, p_female, np.where(s < 0, p_male, np.nan))
    return stereo, anti


def anti_stereo_ratio(p_male, p_female, stereotypical):
    """p(anti-stereotypical) / p(stereotypical) (Vig et al. 2020); NaN where the score is 0."""
    stereo, anti = _stereo_anti(p_male, p_female, stereotypical)
    return anti / stereo


def p_stereotypical(p_male, p_female, stereotypical):
    """Probability of the stereotypical pronoun; NaN where the stereotype score is 0."""
    return _stereo_anti(p_male, p_female, stereotypical)[0]


# ---------------------------------------------------------------------------------------------
# Aggregates over a prompt set.


def bootstrap_ci(values, *, statistic=np.mean, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of `statistic` over `values` (NaNs dropped)."""
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    stats = statistic(values[idx], axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bias_regression(gaps, stereotypical, definitional) -> dict:
    """Least-squares fit gap = a_s · stereotypical + a_f · definitional + b (DAMA's evaluation).

    A score that does not vary over the prompts cannot be fitted; its slope is NaN.
    """
    y = np.asarray(gaps, float)
    cols = {"a_s": np.asarray(stereotypical, float), "a_f": np.asarray(definitional, float)}
    ok = ~np.isnan(y)
    for c in cols.values():
        ok &= ~np.isnan(c)
    fitted = {k: c[ok] for k, c in cols.items() if ok.sum() > 1 and np.ptp(c[ok]) > 0}
    X = np.column_stack([*fitted.values(), np.ones(ok.sum())])
    coef = np.linalg.lstsq(X, y[ok], rcond=None)[0] if ok.sum() else np.full(X.shape[1], np.nan)
    result = {k: float("nan") for k in cols}
    result.update({k: float(v) for k, v in zip(fitted, coef[:-1])})
    result["b"] = float(coef[-1])
    return result


def definitional_accuracy(p_male, p_female, expected) -> np.ndarray:
    """Per prompt: 1 where the pronoun matching the subject's gender is the likelier one."""
    p_male, p_female = np.asarray(p_male, float), np.asarray(p_female, float)
    expected = np.asarray(expected, dtype=object)
    correct = np.where(expected == "male", p_male > p_female, p_female > p_male)
    return np.where((expected == "male") | (expected == "female"), correct.astype(float), np.nan)
