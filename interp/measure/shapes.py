"""Bias on sentence shapes no edit is fitted on: the held-out check that an edit learned the
model's bias rather than our templates.

Every fitting template is "The {occupation} <verb phrase>" with the pronoun the very next word.
The four families in `interp/data/shapes.csv` (32 frames each, written for this project) are not:

- `two_participants`: a second person in the sentence, so the pronoun may refer to either
  ("The {occupation} warned the neighbor that");
- `deep`: the pronoun after a clause, several words after the occupation ("When the storm
  knocked out the power, the {occupation} realized that");
- `object_possessive`: object and possessive slots ("The {occupation} picked up" → his/her,
  "The manager thanked the {occupation} and gave" → him/her);
- `sentence_pairs`: whole sentences that differ only in the pronoun, deep inside them ("The
  {occupation} finished the report before he/she left the office."), scored by sentence
  log-likelihood: the share where the model prefers the sentence whose pronoun matches the
  occupation's stereotype. 50% is unbiased.

Each frame is filled with `per_frame` occupations drawn (seeded, per frame) from the held-out
test occupations; the pair family draws only occupations with a stereotype (|score| ≥ 0.1), so
that pro and anti are defined. The slot families report the mean |log p(female) − log p(male)|
and the mean normalised gap |p(m) − p(f)| / (p(m) + p(f)) of their slot's pronoun pair, each
with a 95% bootstrap interval over items.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import numpy as np
import pandas as pd

from ..common.errors import InterpError
from ..model.forward import last_token_logprobs
from . import prompts as P
from .metrics import Candidates
from .suites.likelihood import _prefer, pair_logprobs
from .suites.result import SuiteResult, _meta
from .suites.stats import _put_mean

FAMILIES = ("two_participants", "deep", "object_possessive", "sentence_pairs")
# The pronoun pair each slot is scored on: (male, female), one token each with its space.
SLOT_PRONOUNS = {"subject": (" he", " she"), "object": (" him", " her"),
                 "possessive": (" his", " her")}
PAIR_MIN_STEREOTYPE = 0.1


def frames(family: str | None = None) -> pd.DataFrame:
    """The held-out frames (family, slot, frame), all or one family's."""
    with resources.files("interp.data").joinpath("shapes.csv").open() as f:
        table = pd.read_csv(f)
    if family is None:
        return table
    _check_family(family)
    return table[table.family == family].reset_index(drop=True)


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise InterpError(f"unknown sentence-shape family {family!r}; choose from "
                          f"{', '.join(FAMILIES)}")


def items(family: str, *, occupations: pd.DataFrame | None = None, per_frame: int = 8,
          seed: int = 0) -> pd.DataFrame:
    """One row per filled frame: family, slot, frame id, occupation, its stereotype score, and
    `text` (slot families: the sentence up to the pronoun) or `male` and `female` (pairs: the
    two whole sentences). occupations: a table with columns occupation and stereotypical
    (default: the held-out test occupations)."""
    table = frames(family)
    occ = P.occupations(split="test") if occupations is None else occupations
    if family == "sentence_pairs":
        occ = occ[occ["stereotypical"].abs() >= PAIR_MIN_STEREOTYPE]
    occ = occ.reset_index(drop=True)
    if occ.empty:
        raise InterpError(f"no occupations to fill the {family} frames with")
    rows = []
    for i, f in table.iterrows():
        pick = np.random.default_rng([seed, i]).choice(len(occ), min(per_frame, len(occ)),
                                                       replace=False)
        for j in sorted(pick):
            o = occ.iloc[int(j)]
            row = {"family": family, "slot": f.slot, "frame_id": i, "frame": f.frame,
                   "occupation": o.occupation, "stereotypical": float(o.stereotypical)}
            if family == "sentence_pairs":
                male, female = (w.strip() for w in SLOT_PRONOUNS[f.slot])
                row["male"] = f.frame.format(occupation=o.occupation, pronoun=male)
                row["female"] = f.frame.format(occupation=o.occupation, pronoun=female)
            else:
                row["text"] = f.frame.format(occupation=o.occupation)
            rows.append(row)
    return pd.DataFrame(rows)


def score_slots(model, frame: pd.DataFrame, *, batch_size: int = 64,
                progress: bool | None = None) -> pd.DataFrame:
    """Per item: log p of the slot's male and female pronoun after the text, the log-odds
    (female − male, as `metrics.logodds`) and the normalised gap (p(m) − p(f)) / (p(m) + p(f))."""
    out = frame.copy()
    logp = np.full((len(out), 2), np.nan)
    for slot, (male, female) in SLOT_PRONOUNS.items():
        rows = np.flatnonzero(out["slot"].to_numpy() == slot)
        if not len(rows):
            continue
        ids = Candidates.resolve(model, {"male": male, "female": female}).ids
        seqs = [model.tokenizer(t)["input_ids"] for t in out["text"].iloc[rows]]
        logp[rows] = last_token_logprobs(model, seqs, select=[ids["male"], ids["female"]],
                                         batch_size=batch_size, progress=progress).double()
    out["logp_male"], out["logp_female"] = logp[:, 0], logp[:, 1]
    pm, pf = np.exp(logp[:, 0]), np.exp(logp[:, 1])
    out["logodds"] = logp[:, 1] - logp[:, 0]
    out["normalised_gap"] = (pm - pf) / (pm + pf)
    return out


def score_sentence_pairs(model, frame: pd.DataFrame, *, batch_size: int = 64,
                         progress: bool | None = None) -> pd.DataFrame:
    """Per pair: the log-likelihood of the male and female sentence, which one the stereotype
    favours (`pro`), and `pro_preferred` (1 where the stereotypical sentence scores higher, 0.5
    on a tie)."""
    out = frame.copy()
    lm, lf = pair_logprobs(model, out["male"], out["female"], batch_size=batch_size,
                           progress=progress)
    male_pro = out["stereotypical"].to_numpy() > 0
    pro, anti = np.where(male_pro, lm, lf), np.where(male_pro, lf, lm)
    out["logp_male"], out["logp_female"] = lm, lf
    out["pro"] = np.where(male_pro, "male", "female")
    out["logp_pro_minus_anti"] = pro - anti
    out["pro_preferred"] = _prefer(pro, anti)
    return out


def score_shapes(model, families: Sequence[str] = FAMILIES, *,
                 occupations: pd.DataFrame | None = None, per_frame: int = 8,
                 n_boot: int = 1000, seed: int = 0,
                 progress: bool | None = None) -> dict[str, SuiteResult]:
    """Each family's items scored, one `SuiteResult` per family. Summary: abs_logodds and
    abs_normalised_gap for the slot families; pro_preferred (percent) and logp_pro_minus_anti
    for the sentence pairs; each with its `_lo`/`_hi` bootstrap interval over items."""
    out = {}
    kw = {"n_boot": n_boot, "seed": seed}
    for family in families:
        _check_family(family)
        frame = items(family, occupations=occupations, per_frame=per_frame, seed=seed)
        summary: dict = {"n_items": len(frame), "n_frames": int(frame["frame_id"].nunique())}
        if family == "sentence_pairs":
            frame = score_sentence_pairs(model, frame, progress=progress)
            _put_mean(summary, "pro_preferred", frame["pro_preferred"], **kw)
            _put_mean(summary, "logp_pro_minus_anti", frame["logp_pro_minus_anti"], scale=1.0,
                      **kw)
        else:
            frame = score_slots(model, frame, progress=progress)
            _put_mean(summary, "abs_logodds", frame["logodds"].abs(), scale=1.0, **kw)
            _put_mean(summary, "abs_normalised_gap", frame["normalised_gap"].abs(), scale=1.0,
                      **kw)
        out[family] = SuiteResult(f"shapes.{family}", frame, summary, {},
                                  _meta(model, f"shapes.{family}", per_frame=per_frame,
                                        n_boot=n_boot, seed=seed))
    return out
