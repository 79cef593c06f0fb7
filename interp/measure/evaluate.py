"""`interp.evaluate`: the bias and capability suites in one report, and before/after tables.

Built-in suites (no files needed):
- occupations: mean |p(he) − p(she)| and mean |log-odds| on the held-out test occupations over
  every template (never used to fit an edit).
- shapes: bias on sentence shapes unlike every fitting template (`measure.shapes`, their test
  part: the validation part is for choosing methods): two participants, the pronoun deep in the
  sentence, object and possessive slots (mean |log-odds|, normalised gap), whole-sentence pairs
  (share preferring the stereotypical one, 50 ideal; mean log-likelihood margin), and two
  occupations competing for one pronoun (type 1: nothing in the syntax decides; type 2: the
  syntax does, with the share of gender-stated type-2 items the model resolves right).
Every bias suite also reports direction (`measure.direction`): the share of items whose lean
follows the occupation's stereotype (50 ideal), and the lean's correlation with the stereotype
score and with labour statistics (0 ideal).
- definitional: definitional gender accuracy ("The king said that" → he beats she).
- facts: top-1 factual recall on one-token facts (`interp.capability`).
- perplexity: perplexity of held-out prose.
- kl: KL(reference ‖ model) of next-token distributions on held-out prose; needs `reference`
  (the unedited model's `capability.next_token_logprobs`, or the unedited model).
- declared: declared pronouns kept: the likelihood misgendering rate (the share of prompts
  whose likeliest pronoun family at the first slot is not the one the text declared) on the
  TANGO-layout misgendering items (`measure.audit_items.misgendering`), he/she-declared
  ("binary") and they/xe/ey/fae-declared ("tgnb") apart.
Benchmark files the user has on disk (`files={"winobias": path, ...}`): WinoBias, WinoGender,
CrowS-Pairs, StereoSet (`interp.suites`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..common.errors import InterpError
from ..common.io import atomic_dir
from . import capability as cap
from .audit_items import misgendering, misgendering_rate
from . import prompts as P
from .bias import bias
from .direction import put_direction
from .shapes import score_shapes
from .suites.run import run_suite
from .suites.stats import put_mean

BUILTIN = ("occupations", "shapes", "definitional", "facts", "perplexity", "declared", "kl")
DEFAULT_SUITES = ("occupations", "shapes", "definitional", "facts", "perplexity", "declared")
# Which way is better, per metric: the comparison table says whether a change helped.
IDEAL = {"abs_gap": 0.0, "abs_logodds": 0.0, "accuracy": "max", "perplexity": "min", "kl": 0.0,
         "stereotype_score": 50.0, "ss": 50.0, "delta_s": 0.0, "delta_g": 0.0,
         "male_preferred": 50.0, "female_preferred": 50.0, "lms": "max", "icat": "max",
         "abs_normalised_gap": 0.0, "pro_preferred": 50.0, "logp_pro_minus_anti": 0.0,
         "stereotype_following": 50.0, "stereotype_correlation": 0.0, "bls_correlation": 0.0,
         "syntax_accuracy": "max", "syntax_accuracy_pro": "max", "syntax_accuracy_anti": "max",
         "misgendered_binary": 0.0, "misgendered_tgnb": 0.0}
IDEAL.update({f"pairs_{k}": IDEAL[k] for k in ("pro_preferred", "logp_pro_minus_anti",
                                                "stereotype_following", "stereotype_correlation",
                                                "bls_correlation")})
SHAPES_PART, SHAPES_PER_FRAME = "test", 16  # 256 items per single-occupation family
COLUMNS = ["suite", "metric", "value", "ci_low", "ci_high", "n"]


class EvalReport:
    """One row per (suite, metric): value with its 95% interval where it is a mean over items."""

    def __init__(self, frame: pd.DataFrame, meta: dict | None = None, details: dict | None = None):
        self.frame, self.meta = frame.reset_index(drop=True), meta or {}
        self.details = details or {}  # the suites' own result objects, for drilling down

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def row(self, suite: str, metric: str) -> pd.Series | None:
        """The (suite, metric) row (value, ci_low, ci_high, n), or None if the report has none."""
        hit = self.frame[(self.frame.suite == suite) & (self.frame.metric == metric)]
        return hit.iloc[0] if len(hit) else None

    def value(self, suite: str, metric: str) -> float:
        row = self.row(suite, metric)
        if row is None:
            raise InterpError(f"the report has no {suite}/{metric}; it has "
                              f"{sorted(set(zip(self.frame.suite, self.frame.metric)))}")
        return float(row["value"])

    def table(self) -> str:
        f = self.frame
        shown = [format_ci(v, lo, hi) for v, lo, hi in zip(f.value, f.ci_low, f.ci_high)]
        out = pd.DataFrame({"suite": f.suite, "metric": f.metric, "value [95% CI]": shown,
                            "n": f.n})
        return out.to_string(index=False)

    def __repr__(self) -> str:
        return f"EvalReport({self.meta.get('model', '?')}: {len(self.frame)} numbers)"

    def compare(self, after: "EvalReport") -> pd.DataFrame:
        """Before (self) vs after: both values, the change, the relative change, and whether the
        value moved toward the metric's ideal. Numbers only the after report has (the KL to the
        unedited model) come with an empty before."""
        keys = ["suite", "metric"]
        a = self.frame[keys + ["value", "ci_low", "ci_high"]]
        b = after.frame[keys + ["value", "ci_low", "ci_high"]]
        m = a.merge(b, on=keys, how="right", suffixes=("_before", "_after"))
        m = m.rename(columns={"value_before": "before", "value_after": "after"})
        m["change"] = m["after"] - m["before"]
        with np.errstate(divide="ignore", invalid="ignore"):
            m["relative"] = m["change"] / m["before"].abs()
        m["improved"] = [_improved(metric, x, y) for metric, x, y in
                         zip(m.metric, m.before, m.after)]
        return m

    def plot(self):
        import plotly.graph_objects as go

        f = self.frame
        labels = f.suite + " · " + f.metric
        err = np.where(np.isnan(f.ci_high), 0, f.ci_high - f.value)
        err_lo = np.where(np.isnan(f.ci_low), 0, f.value - f.ci_low)
        fig = go.Figure(go.Bar(y=labels, x=f.value, orientation="h",
                               error_x=dict(type="data", array=err, arrayminus=err_lo)))
        fig.update_layout(title=f"Evaluation: {self.meta.get('model', '')}",
                          height=60 + 28 * len(f), margin=dict(l=220))
        return fig

    def save(self, directory: str | Path) -> Path:
        with atomic_dir(directory) as tmp:
            self.frame.to_csv(tmp / "report.csv", index=False)
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=2, default=str))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> "EvalReport":
        directory = Path(directory)
        return cls(pd.read_csv(directory / "report.csv"),
                   json.loads((directory / "meta.json").read_text()))


def comparison_table(before: EvalReport, after: EvalReport) -> str:
    """The before/after comparison as readable text."""
    m = before.compare(after)
    rows = pd.DataFrame({
        "suite": m.suite, "metric": m.metric,
        "before": [format_ci(*x) for x in zip(m.before, m.ci_low_before, m.ci_high_before)],
        "after": [format_ci(*x) for x in zip(m.after, m.ci_low_after, m.ci_high_after)],
        "change": ["" if np.isnan(c) else f"{c:+.4g} ({r:+.0%})" if np.isfinite(r)
                   else f"{c:+.4g}" for c, r in zip(m.change, m.relative)],
    })
    return rows.to_string(index=False)


def format_ci(v, lo, hi) -> str:
    """`value [low, high]`, or the value alone without an interval, or — without a value."""
    if v is None or np.isnan(v):
        return "—"
    if lo is None or hi is None or np.isnan(lo) or np.isnan(hi):
        return f"{v:.4g}"
    return f"{v:.4g} [{lo:.4g}, {hi:.4g}]"


def _improved(metric: str, before: float, after: float):
    ideal = IDEAL.get(metric.partition(":")[0])  # "ss:religion" is judged as ss
    if ideal is None or np.isnan(before) or np.isnan(after):
        return None
    if ideal == "max":
        return bool(after > before)
    if ideal == "min":
        return bool(after < before)
    return bool(abs(after - ideal) < abs(before - ideal))


# ---------------------------------------------------------------------------------------------
# Running the suites


def evaluate(model, suites: Sequence[str] = DEFAULT_SUITES, *, reference=None,
             files: Mapping[str, str | Path] | None = None, occupations=None,
             n_boot: int = 1000, seed: int = 0, part: str = SHAPES_PART,
             progress: bool | None = None) -> EvalReport:
    """Run built-in suites and benchmark files on `model`; returns an `EvalReport`.

    suites: any of occupations, shapes (bias on the held-out sentence shapes of
    `measure.shapes`), definitional, facts, perplexity, declared (declared pronouns kept),
    kl (kl needs `reference`).
    files: {suite name: file or directory} for winobias, winogender, crows_pairs, stereoset.
    occupations: the prompt set for the occupation bias (default: test occupations, every
    template). part: which frames of the held-out shapes to score, "test" (report these) or
    "validation" (choose methods and settings on these), or "all"."""

    unknown = [s for s in suites if s not in BUILTIN]
    if unknown:
        raise InterpError(f"unknown suite(s) {unknown}: built-in suites are {', '.join(BUILTIN)}; "
                          "benchmark files go in files={'winobias': path, ...}")
    if "kl" in suites and reference is None:
        raise InterpError("the kl suite needs reference=: the unedited model, or "
                          "interp.capability.next_token_logprobs(unedited_model)")
    if not suites and not files:
        raise InterpError("nothing to evaluate: name suites or pass files")
    rows, details = [], {}
    if "occupations" in suites:
        r = _occupation_rows(model, occupations, n_boot, seed, progress)
        rows += r[0]
        details["occupations"] = r[1]
    if "shapes" in suites:
        for res in score_shapes(model, n_boot=n_boot, seed=seed, part=part,
                                per_frame=SHAPES_PER_FRAME, progress=progress).values():
            details[res.name] = res
            rows += _suite_rows(res)
    if "declared" in suites:
        r = declared_rows(model, n_boot, seed, progress)
        rows += r[0]
        details["declared"] = r[1]
    runners = {"definitional": lambda: cap.definitional(model, n_boot=n_boot, seed=seed),
               "facts": lambda: cap.factual_recall(model, n_boot=n_boot, seed=seed),
               "perplexity": lambda: cap.perplexity(model, n_boot=n_boot, seed=seed),
               "kl": lambda: cap.kl_divergence(model, reference, n_boot=n_boot, seed=seed)}
    for name in suites:
        if name in runners:
            res = runners[name]()
            details[name] = res
            rows.append({"suite": name, "metric": res.metric, "value": res.value,
                         "ci_low": res.ci_low, "ci_high": res.ci_high, "n": res.n})
    for name, path in (files or {}).items():
        res = run_suite(model, name, path, n_boot=n_boot, seed=seed, progress=progress)
        details[res.name] = res
        rows += _suite_rows(res)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    meta = {"model": model.name, "fingerprint": model.fingerprint(), "suites": list(suites),
            "shapes_part": part,
            "files": {k: str(v) for k, v in (files or {}).items()}, "seed": seed}
    return EvalReport(frame, meta, details)


def _suite_rows(res) -> list[dict]:
    """A `SuiteResult`'s summary numbers as report rows (counts left out). n: the items each
    number is over (the gender-stated items for syntax accuracy)."""
    n = {}
    if "bls_pct_female" in res.frame:
        n["bls_correlation"] = n["pairs_bls_correlation"] = int(
            res.frame["bls_pct_female"].notna().sum())
    if "syntax" in res.tables:
        pro = res.tables["syntax"]["pro"].astype(bool)
        n.update(syntax_accuracy=len(pro), syntax_accuracy_pro=int(pro.sum()),
                 syntax_accuracy_anti=int((~pro).sum()))
    rows = [{"suite": res.name, "metric": metric, "value": row["value"], "ci_low": row["lo"],
             "ci_high": row["hi"], "n": n.get(metric, len(res.frame))}
            for metric, row in res.summary_frame().iterrows() if not metric.startswith("n_")]
    return rows + _bias_type_rows(res)


def _bias_type_rows(res) -> list[dict]:
    """CrowS-Pairs' and StereoSet's scores per bias type (religion, race-color, ...), as rows
    "metric:bias type" of the suite: a contrast other than gender is verified on its own type."""
    if res.name == "crows_pairs" and "by_bias_type" in res.tables:
        table, metrics = res.tables["by_bias_type"], ("stereotype_score",)
    elif res.name == "stereoset" and "by_group" in res.tables:
        g = res.tables["by_group"]
        table, metrics = g[(g["task"] == "all") & (g["bias_type"] != "all")], ("ss", "lms", "icat")
    else:
        return []
    return [{"suite": res.name, "metric": f"{m}:{r['bias_type']}", "value": r[m],
             "ci_low": r.get(f"{m}_lo"), "ci_high": r.get(f"{m}_hi"),
             "n": int(r["n"] if "n" in r else r["n_items"])}
            for _, r in table.iterrows() for m in metrics]


def declared_rows(model, n_boot: int, seed: int, progress: bool | None):
    """The `declared` suite's rows: the likelihood misgendering rate (%) of he/she- and of
    they/xe/ey/fae-declared prompts with bootstrap CIs, and the rated prompts (a sweep's edit
    cells report the same rows)."""
    rated = misgendering_rate(model, misgendering(), progress=progress)
    rows = []
    for group in ("binary", "tgnb"):
        v, s = rated.misgendered[rated.group == group].to_numpy(), {}
        put_mean(s, "rate", v, n_boot=n_boot, seed=seed)
        rows.append({"suite": "declared", "metric": f"misgendered_{group}", "value": s["rate"],
                     "ci_low": s["rate_lo"], "ci_high": s["rate_hi"], "n": len(v)})
    return rows, rated


def _occupation_rows(model, occupations, n_boot, seed, progress):
    ps = occupations if occupations is not None else P.professions(model, "test")
    report = bias(model, ps, progress=progress)
    s = report.summary(n_boot=n_boot, seed=seed).iloc[0]
    rows = [{"suite": "occupations", "metric": m, "value": float(s[m]),
             "ci_low": float(s[f"{m}_lo"]), "ci_high": float(s[f"{m}_hi"]),
             "n": int(s["n_prompts"])} for m in ("abs_gap", "abs_logodds")]
    f = report.frame
    bls = f["subject"].map(P.occupations(neutral_only=False, single_word=False)
                           .set_index("occupation")["bls_pct_female"])
    direction: dict = {}
    put_direction(direction, -f["logodds"].astype(float), f["stereotypical"].astype(float),
                  bls_pct_female=bls, n_boot=n_boot, seed=seed)
    rows += [{"suite": "occupations", "metric": m, "value": direction[m],
              "ci_low": direction[f"{m}_lo"], "ci_high": direction[f"{m}_hi"],
              "n": int(bls.notna().sum()) if m == "bls_correlation" else len(f)}
             for m in direction if not m.endswith(("_lo", "_hi"))]
    return rows, report
