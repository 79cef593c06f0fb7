"""Corpus gender share against the model's gender share, per occupation (after "How far can
bias go?", arXiv 2411.19240).

The model's female share of an occupation is p(she) / (p(she) + p(he)) at the end of the
toolkit's occupation prompts ("The nurse said that"), averaged over templates; the corpus'
is female / (female + male) co-occurrences (`interp.studies.corpus`). Per occupation one point;
over them, Pearson and Spearman correlation and the amplification slope (the model's share
against the corpus', least squares), with bootstrap 95% CIs over occupations. A slope above 1
means the model exaggerates the corpus' imbalance, below 1 that it flattens it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..common.errors import InterpError
from ..common.io import atomic_dir
from ..measure import prompts as P
from ..measure.bias import measure
from ..measure.suites.stats import pearson, put_stat
from .corpus import CorpusCounts


class CorpusComparison:
    """`frame`: one row per occupation (corpus and model female share, mentions); `summary`:
    correlations and the amplification slope with CIs; `meta`: model, corpus, settings."""

    def __init__(self, frame: pd.DataFrame, summary: dict, meta: dict):
        self.frame, self.summary, self.meta = frame, summary, meta

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def table(self) -> str:
        s = self.summary
        rows = []
        for key in ("pearson", "spearman", "slope", "intercept"):
            ci = (f" [{s[key + '_lo']:.3f}, {s[key + '_hi']:.3f}]" if key + "_lo" in s else "")
            rows.append(f"{key:>10}: {s[key]:.3f}{ci}")
        return f"{s['n_occupations']} occupations\n" + "\n".join(rows)

    def plot(self):
        import plotly.graph_objects as go

        f = self.frame
        fig = go.Figure()
        fig.add_scatter(x=f.corpus_share, y=f.model_share, mode="markers+text",
                        text=f.occupation, textposition="top center", name="occupation",
                        marker=dict(size=np.clip(np.sqrt(f.mentions), 4, 20)))
        xs = np.array([0.0, 1.0])
        fig.add_scatter(x=xs, y=self.summary["intercept"] + self.summary["slope"] * xs,
                        mode="lines", name=f"slope {self.summary['slope']:.2f}")
        fig.add_scatter(x=xs, y=xs, mode="lines", line=dict(dash="dot", color="grey"),
                        name="model = corpus")
        fig.update_layout(title=f"Female share per occupation: {self.meta.get('model')} vs "
                                f"corpus", xaxis_title="corpus: female / (female + male) terms",
                          yaxis_title="model: p(she) / (p(she) + p(he))")
        return fig

    def save(self, directory: str | Path) -> Path:
        with atomic_dir(directory) as tmp:
            self.frame.to_csv(tmp / "occupations.csv", index=False)
            (tmp / "result.json").write_text(json.dumps({"summary": self.summary,
                                                         "meta": self.meta}, indent=2,
                                                        default=str))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> "CorpusComparison":
        d = Path(directory)
        saved = json.loads((d / "result.json").read_text())
        return cls(pd.read_csv(d / "occupations.csv"), saved["summary"], saved["meta"])


def model_shares(model, occupations, templates=P.TEMPLATES) -> pd.DataFrame:
    """Per occupation (one-token-or-more words the prompt builder takes), the model's mean
    p(she) / (p(she) + p(he)) over `templates`."""
    prompts = P.from_templates(model, templates, [{"subject": o} for o in occupations])
    f = measure(model, prompts)
    f["model_share"] = f.p_female / (f.p_female + f.p_male)
    return f.groupby("subject").agg(model_share=("model_share", "mean"),
                                    n_prompts=("model_share", "size")).reset_index().rename(
        columns={"subject": "occupation"})


def compare_corpus(model, counts, *, min_mentions: int = 5, templates=P.TEMPLATES,
                   n_boot: int = 1000, seed: int = 0) -> CorpusComparison:
    """Correlate the corpus' female share per occupation (`counts`: a `CorpusCounts` or its
    CSV) with the model's, over occupations with at least `min_mentions` mentions and some
    gendered co-occurrence."""
    if not isinstance(counts, CorpusCounts):
        counts = CorpusCounts.load(counts)
    c = counts.frame
    c = c[(c.mentions >= min_mentions) & ((c.female + c.male) > 0)]
    if len(c) < 3:
        raise InterpError(f"only {len(c)} occupations have {min_mentions}+ mentions with gender "
                          "terms nearby: a comparison needs at least 3 (lower min_mentions or "
                          "count a larger corpus)")
    m = model_shares(model, list(c.occupation), templates)
    f = c.rename(columns={"female_share": "corpus_share"}).merge(m, on="occupation")
    x, y = f.corpus_share.to_numpy(float), f.model_share.to_numpy(float)
    summary: dict = {"n_occupations": len(f)}

    def slope_of(idx):
        xs, ys = x[idx], y[idx]
        xc = xs - xs.mean(-1, keepdims=True)
        return (xc * (ys - ys.mean(-1, keepdims=True))).sum(-1) / (xc ** 2).sum(-1)

    def spearman_of(idx):
        rx = np.argsort(np.argsort(x[idx], -1), -1).astype(float)
        ry = np.argsort(np.argsort(y[idx], -1), -1).astype(float)
        rxc, ryc = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
        return (rxc * ryc).sum(-1) / np.sqrt((rxc ** 2).sum(-1) * (ryc ** 2).sum(-1))

    with np.errstate(invalid="ignore", divide="ignore"):
        for key, fn in (("pearson", pearson(x, y)), ("spearman", spearman_of),
                        ("slope", slope_of)):
            put_stat(summary, key, fn, len(f), n_boot=n_boot, seed=seed)
    summary["intercept"] = float(y.mean() - summary["slope"] * x.mean())
    meta = {"model": model.name, "fingerprint": model.fingerprint(), "corpus": counts.meta,
            "min_mentions": min_mentions, "templates": list(templates), "n_boot": n_boot,
            "seed": seed}
    return CorpusComparison(f, summary, meta)
