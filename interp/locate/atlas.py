"""A bias atlas: every contrast traced on one model with the same spec and drawn side by side, to
ask whether the model carries religion where it carries gender.

Each contrast is traced on a seeded sample of its train prompts, noise on its traced span (the
subject, or the declaration for a contrast that follows a declared group), MLP and attention
cells. Effects are in each contrast's own units (its lean in nats), so the figure scales each
contrast by its mean total effect, and the summary compares where along the layers the effects
sit: the share of the positive MLP effect at the span's last token in the bottom third of the
layers (the LSDM paper: bias is written there) and of the attention effect at the prompt's last
token in the top third (the paper: carried there).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..common.io import atomic_dir
from ..measure.contrast import contrast as contrast_of
from ..measure.contrast import contrasts as builtin_contrasts
from ..measure.prompts import pick
from .groups import TOKEN_GROUPS
from .plots import COLORS, NEGATIVE
from .result import TraceResult
from .trace import trace

ATLAS_PROMPTS = 24
ATLAS_KINDS = ("mlp", "attn")
# Where the LSDM paper finds each kind's effect: the MLPs at the subject's last token, the
# attention at the prompt's last token.
PAPER_GROUP = {"mlp": "last subject token", "attn": "last token"}


class Atlas:
    """One trace per contrast (`traces`, in order), with the comparison across them."""

    def __init__(self, traces: dict[str, TraceResult], meta: dict):
        self.traces, self.meta = dict(traces), dict(meta)

    def to_frame(self) -> pd.DataFrame:
        """Per contrast, kind, layer and token group: the mean oriented effect, and `scaled`,
        that effect over the contrast's mean |total effect|."""
        parts = []
        for name, t in self.traces.items():
            g = t.grouped()
            g = g[g["head"].isna()].drop(columns=["head"])
            total = float(t.prompts["total_effect"].abs().mean()) or 1.0
            parts.append(g.assign(contrast=name, scaled=g["effect"] / total))
        cols = ["contrast", "kind", "layer", "token_group", "effect", "scaled", "ci_lo", "ci_hi",
                "n"]
        return pd.concat(parts, ignore_index=True)[cols]

    def profile(self, name: str, kind: str) -> pd.Series:
        """Mean oriented effect per layer of `kind` at the token group the paper reads it at."""
        return self.traces[name].layer_profile(kind, PAPER_GROUP[kind])

    def summary(self) -> pd.DataFrame:
        """Per contrast: prompts, mean total effect, and per kind the peak layer and the share
        of the positive effect in the paper's third of the layers (bottom for the MLPs at the
        span's last token, top for the attention at the last token)."""
        rows = []
        for name, t in self.traces.items():
            row = {"contrast": name, "prompts": len(t.prompts),
                   "total_effect": float(t.prompts["total_effect"].mean())}
            for kind in t.spec["kinds"]:
                if kind not in PAPER_GROUP:
                    continue
                p = self.profile(name, kind)
                row[f"{kind}_peak_layer"] = int(p.idxmax())
                row[f"{kind}_share_{'bottom' if kind == 'mlp' else 'top'}_third"] = \
                    third_share(p, "bottom" if kind == "mlp" else "top")
            rows.append(row)
        return pd.DataFrame(rows).set_index("contrast")

    def table(self) -> str:
        return self.summary().to_string(float_format=lambda x: f"{x:.3f}")

    def __repr__(self) -> str:
        return (f"Atlas({self.meta.get('model', '?')}: {', '.join(self.traces)}; "
                f"{self.meta.get('prompts')} prompts each)")

    def plot(self):
        """Heatmaps, layers × token groups: a row per kind, a column per contrast, each scaled
        by its contrast's mean total effect (+ = toward the clean outcome)."""
        from plotly.subplots import make_subplots

        frame = self.to_frame()
        kinds = [k for k in ATLAS_KINDS if k in set(frame["kind"])]
        names = list(self.traces)
        fig = make_subplots(rows=len(kinds), cols=len(names), shared_yaxes=True,
                            subplot_titles=[f"{n}: {k}" for k in kinds for n in names],
                            vertical_spacing=0.16, horizontal_spacing=0.03)
        lim = float(np.nanmax(np.abs(frame["scaled"]))) or 1.0
        for r, kind in enumerate(kinds, start=1):
            for c, name in enumerate(names, start=1):
                f = frame[(frame.contrast == name) & (frame.kind == kind)]
                z = f.pivot_table(index="layer", columns="token_group", values="scaled")
                z = z[[g for g in TOKEN_GROUPS if g in z.columns]]
                fig.add_heatmap(z=z.to_numpy(), x=list(z.columns), y=list(z.index), zmid=0,
                                zmin=-lim, zmax=lim, row=r, col=c,
                                colorscale=[[0.0, NEGATIVE], [0.5, "white"], [1.0, COLORS[kind]]],
                                showscale=c == len(names),
                                colorbar=dict(len=1 / len(kinds), y=1 - (r - 0.5) / len(kinds),
                                              thickness=10),
                                hovertemplate="layer %{y}<br>%{x}<br>scaled effect %{z:.3f}"
                                "<extra></extra>")
                fig.update_xaxes(tickangle=-40, row=r, col=c)
            fig.update_yaxes(title_text="layer", row=r, col=1)
        fig.update_layout(title=f"Bias atlas of {self.meta.get('model', 'the model')}: "
                                "effect of restoring each site, over each contrast's mean "
                                "total effect", height=460 * len(kinds),
                          width=300 * len(names) + 160, margin=dict(b=140))
        return fig

    def save(self, directory: str | Path) -> Path:
        """A directory with one trace per contrast and atlas.json, written atomically."""
        with atomic_dir(directory) as tmp:
            for name, t in self.traces.items():
                t.save(tmp / name)
            (tmp / "atlas.json").write_text(json.dumps({**self.meta,
                                                        "contrasts": list(self.traces)},
                                                       indent=2))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> Atlas:
        d = Path(directory)
        meta = json.loads((d / "atlas.json").read_text())
        return cls({n: TraceResult.load(d / n) for n in meta["contrasts"]}, meta)


def third_share(profile: pd.Series, where: str) -> float:
    """The share of a layer profile's positive effect in its bottom or top third of layers."""
    n = int(profile.index.max()) + 1
    pos = profile.clip(lower=0)
    total = float(pos.sum())
    part = pos[pos.index < n / 3] if where == "bottom" else pos[pos.index >= 2 * n / 3]
    return float(part.sum()) / total if total > 0 else float("nan")


def atlas(model, contrasts: Sequence | None = None, *, prompts: int = ATLAS_PROMPTS,
          kinds: Sequence[str] = ATLAS_KINDS, samples: int = 3, window: int = 1, seed: int = 0,
          progress: bool | None = None) -> Atlas:
    """Trace each contrast (default: every built-in) on `prompts` of its train prompts (a
    seeded sample), with one spec for all. contrasts: names, files or `Contrast`s."""
    chosen = [contrast_of(c) for c in (contrasts or builtin_contrasts())]
    traces = {}
    for c in chosen:
        sample = pick(c.prompts(model, "train"), prompts, seed)
        traces[c.name] = trace(model, sample, contrast=c, kinds=kinds, samples=samples,
                               window=window, seed=seed, progress=progress)
    return Atlas(traces, {"model": model.name, "prompts": prompts, "kinds": list(kinds),
                          "samples": samples, "window": window, "seed": seed})
