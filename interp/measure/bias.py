"""Bias of a model over prompt sets: per-prompt pronoun probabilities and aggregate scores."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ..common.errors import InterpError
from ..common.io import atomic_dir
from ..model.forward import last_token_logprobs
from . import metrics
from . import prompts as P
from .contrast import contrast as read_contrast
from .contrast import is_gender, measure_contrast
from .prompts import PromptSet


# The neutral pronoun beside each slot's pair (metrics.SLOT_PRONOUNS), for p_neutral.
SLOT_NEUTRAL = {"subject": " they", "object": " them", "possessive": " their"}


def slot_candidates(model, slot: str) -> metrics.Candidates:
    """The candidates a prompt of this slot is scored on: "The nurse told" → him / her / them."""
    male, female = metrics.SLOT_PRONOUNS[slot]
    return metrics.Candidates.resolve(model, {"male": male, "female": female,
                                              "neutral": SLOT_NEUTRAL[slot]})


def measure(model, prompts: PromptSet, *, candidates: metrics.Candidates | None = None,
            batch_size: int = 64, progress: bool | None = None) -> pd.DataFrame:
    """One row per prompt: the candidates' probabilities and every outcome measure. Without
    `candidates`, each prompt is scored on its own slot's pronouns (he/she/they, him/her/them
    or his/her/their: `Prompt.slot`); with them, every prompt on those."""
    prompts.require_nonempty()
    slots = [p.slot for p in prompts] if candidates is None else ["given"] * len(prompts)
    logp = None
    for slot in dict.fromkeys(slots):
        cands = candidates or slot_candidates(model, slot)
        rows = [i for i, s in enumerate(slots) if s == slot]
        part = last_token_logprobs(model, [prompts[i].input_ids for i in rows],
                                   select=cands.token_ids, batch_size=batch_size,
                                   progress=progress).double().numpy()
        if logp is None:
            logp = np.empty((len(prompts), part.shape[1]))
        logp[rows] = part
    frame = prompts.to_frame()[["prompt_id", "text", "subject", "template", "split",
                                "stereotypical", "definitional", "expected"]]
    if candidates is None:
        frame["slot"] = slots
    for j, role in enumerate(cands.roles):
        frame[f"p_{role}"] = np.exp(logp[:, j])
    lm, lf = logp[:, cands.roles.index("male")], logp[:, cands.roles.index("female")]
    pm, pf = np.exp(lm), np.exp(lf)
    stereo = frame["stereotypical"].astype(float).to_numpy()
    frame["logodds"] = metrics.logodds(lm, lf)
    frame["gap"] = metrics.gap(pm, pf)
    frame["abs_gap"] = metrics.abs_gap(pm, pf)
    frame["normalised_gap"] = metrics.normalised_gap(pm, pf)
    frame["anti_stereo_ratio"] = metrics.anti_stereo_ratio(pm, pf, stereo)
    frame["p_stereotypical"] = metrics.p_stereotypical(pm, pf, stereo)
    frame["definitional_correct"] = metrics.definitional_accuracy(pm, pf, frame["expected"])
    return frame


def summarize(frame: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Aggregate scores of one prompt set's per-prompt frame, with 95% bootstrap intervals."""
    row: dict = {"n_prompts": len(frame), "n_subjects": frame["subject"].nunique()}
    for col in [c for c in frame.columns if c.startswith("p_") and c != "p_stereotypical"]:
        row[col] = float(frame[col].mean())
    for name, values in (("abs_gap", frame["abs_gap"]),
                         ("abs_logodds", frame["logodds"].abs()),
                         ("definitional_acc", frame["definitional_correct"])):
        values = values.astype(float)
        row[name] = float(values.mean()) if values.notna().any() else float("nan")
        row[f"{name}_lo"], row[f"{name}_hi"] = metrics.bootstrap_ci(values, n_boot=n_boot,
                                                                    seed=seed)
    row["mean_gap"] = float(frame["gap"].mean())
    row.update(metrics.bias_regression(frame["gap"], frame["stereotypical"].astype(float),
                                       frame["definitional"].astype(float)))
    return row


class BiasReport:
    """Per-prompt bias measurements over one or more named prompt sets."""

    def __init__(self, frame: pd.DataFrame, meta: dict | None = None):
        self.frame = frame
        self.meta = meta or {}

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def summary(self, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        rows = []
        for name, group in self.frame.groupby("set", sort=False):
            rows.append({"set": name, **summarize(group, n_boot=n_boot, seed=seed)})
        return pd.DataFrame(rows).set_index("set")

    def table(self) -> str:
        """The summary as a readable text table (means with [95% CI])."""
        s = self.summary()

        def ci(col):
            return [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if not np.isnan(m) else "—"
                    for m, lo, hi in zip(s[col], s[f"{col}_lo"], s[f"{col}_hi"])]

        def num(col):
            return [f"{v:.3f}" if not np.isnan(v) else "—" for v in s[col]]

        shown = pd.DataFrame({
            "prompts": s["n_prompts"], "subjects": s["n_subjects"],
            "p(he)": num("p_male"), "p(she)": num("p_female"),
            "|p(he)-p(she)|": ci("abs_gap"), "|logodds|": ci("abs_logodds"),
            "a_s": num("a_s"), "a_f": num("a_f"), "b": num("b"),
            "def. acc": ci("definitional_acc"),
        }, index=s.index)
        return shown.to_string()

    def plot(self):
        """Scatter of p(he) − p(she) per subject (mean over templates) against its stereotype."""
        import plotly.express as px

        per_subject = (self.frame.groupby(["set", "subject"], sort=False)
                       .agg(gap=("gap", "mean"), stereotypical=("stereotypical", "first"))
                       .reset_index())
        fig = px.scatter(per_subject, x="stereotypical", y="gap", color="set", hover_name="subject",
                         labels={"stereotypical": "stereotype score (+ male)",
                                 "gap": "p(he) − p(she)"},
                         title=f"Pronoun bias of {self.meta.get('model', 'the model')}")
        fig.add_hline(y=0, line_dash="dot", line_color="grey")
        return fig

    def save(self, directory: str | Path) -> Path:
        with atomic_dir(directory) as tmp:
            self.frame.to_csv(tmp / "prompts.csv", index=False)
            self.summary().to_csv(tmp / "summary.csv")
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> "BiasReport":
        directory = Path(directory)
        frame = pd.read_csv(directory / "prompts.csv")
        return cls(frame, json.loads((directory / "meta.json").read_text()))


def bias(model, prompt_sets: PromptSet | Mapping[str, PromptSet] | None = None, *,
         candidates: metrics.Candidates | None = None, batch_size: int = 64,
         progress: bool | None = None, contrast=None):
    """Measure the model's pronoun bias on each prompt set: each prompt on its own slot's
    pronouns (he/she, him/her, his/her), unless `candidates` names one set for all. Without
    prompt sets: the gender contrast's train and test parts in every fitting context.

    contrast: another bias axis (a built-in's name, a file or an `interp.Contrast`): its
    train and test items are scored instead (`measure_contrast`), and the result is a
    `ContrastReport`."""
    if contrast is not None:
        chosen = read_contrast(contrast)
        if not is_gender(chosen):
            if prompt_sets is not None or candidates is not None:
                raise InterpError("a contrast brings its own items and groups: pass either "
                                  "contrast= or prompt_sets/candidates, not both")
            return measure_contrast(model, chosen, progress=progress)
    if prompt_sets is None:
        prompt_sets = {s: P.contexts(model, s) for s in ("train", "test")}
    if isinstance(prompt_sets, PromptSet):
        prompt_sets = {prompt_sets.name: prompt_sets}
    frames = []
    for name, ps in prompt_sets.items():
        f = measure(model, ps, candidates=candidates, batch_size=batch_size, progress=progress)
        f.insert(0, "set", name)
        frames.append(f)
    used = sorted({p.slot for ps in prompt_sets.values() for p in ps})
    words = (candidates.words if candidates is not None else
             {s: slot_candidates(model, s).words for s in used} if used != ["subject"] else
             slot_candidates(model, "subject").words)
    meta = {"model": model.name, "fingerprint": model.fingerprint(), "candidates": words}
    return BiasReport(pd.concat(frames, ignore_index=True), meta)
