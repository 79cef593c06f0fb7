"""Plotly figures in the style of the causal-tracing papers: layers × tokens, one panel per kind."""

from __future__ import annotations

import numpy as np

from .result import TOKEN_GROUPS

TITLES = {"resid": "residual stream", "mlp": "MLP output", "attn": "attention output",
          "head": "attention heads (last token)"}
COLORS = {"resid": "Purples", "mlp": "Greens", "attn": "Reds", "head": "Blues"}


def _panels(kinds):
    from plotly.subplots import make_subplots

    return make_subplots(rows=1, cols=len(kinds), subplot_titles=[TITLES[k] for k in kinds],
                         horizontal_spacing=0.08)


def trace_figure(result, prompt_id: int | None = None):
    """Heatmaps of the effect. With `prompt_id`, that prompt's tokens (subject marked with *);
    otherwise the mean oriented effect over prompts, by token group."""
    kinds = list(result.spec["kinds"])
    fig = _panels(kinds)
    if prompt_id is not None:
        p = result.prompts.set_index("prompt_id").loc[prompt_id]
        labels = [f"{t!r}{'*' if p.subject_start <= i < p.subject_end else ''}"
                  for i, t in enumerate(p.tokens)]
        title = f"{p.text!r}: effect of restoring each site ({result.spec['metric']})"
    else:
        labels = None
        title = (f"Mean oriented effect over {len(result.prompts)} prompts "
                 f"({result.spec['metric']}, {result.spec['corruption']['type']} corruption)")
    g = result.grouped() if prompt_id is None else None
    for col, kind in enumerate(kinds, start=1):
        if prompt_id is not None:
            f = result.frame[(result.frame.prompt_id == prompt_id) & (result.frame.kind == kind)]
            if kind == "head":
                last = len(labels) - 1
                f = f[f.position == last]
                z = f.pivot_table(index="layer", columns="head", values="effect")
                x = [f"H{h}" for h in z.columns]
            else:
                z = f.pivot_table(index="layer", columns="position", values="effect")
                x = [labels[i] for i in z.columns]
        else:
            f = g[g.kind == kind]
            if kind == "head":
                f = f[f.token_group == "last token"]
                z = f.pivot_table(index="layer", columns="head", values="effect")
                x = [f"H{h}" for h in z.columns]
            else:
                z = f.pivot_table(index="layer", columns="token_group", values="effect")
                z = z[[c for c in TOKEN_GROUPS if c in z.columns]]
                x = list(z.columns)
        fig.add_heatmap(z=z.to_numpy(), x=x, y=list(z.index), colorscale=COLORS[kind],
                        colorbar=dict(x=col / len(kinds) - 0.02, len=0.9, thickness=10),
                        row=1, col=col, hovertemplate="layer %{y}<br>%{x}<br>effect %{z:.4f}"
                        "<extra></extra>")
        fig.update_xaxes(tickangle=-40, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, row=1, col=col)
    fig.update_layout(title=title, height=520, width=380 * len(kinds) + 120,
                      margin=dict(b=140))
    return fig


def comparison_figure(comparison):
    """Before, after and difference heatmaps per kind (token groups × layers)."""
    from plotly.subplots import make_subplots

    f = comparison.frame
    kinds = [k for k in comparison.before_spec["kinds"] if k != "head"]
    cols = ("before", "after", "difference")
    fig = make_subplots(rows=len(kinds), cols=3, vertical_spacing=0.08, horizontal_spacing=0.06,
                        subplot_titles=[f"{TITLES[k]}: {c}" for k in kinds for c in cols])
    for r, kind in enumerate(kinds, start=1):
        sub = f[f.kind == kind]
        lim = float(np.nanmax(np.abs(sub[["before", "after"]].to_numpy()))) or 1.0
        for c, col in enumerate(cols, start=1):
            z = sub.pivot_table(index="layer", columns="token_group", values=col)
            z = z[[g for g in TOKEN_GROUPS if g in z.columns]]
            fig.add_heatmap(z=z.to_numpy(), x=list(z.columns), y=list(z.index),
                            colorscale="RdBu", zmid=0, zmin=-lim, zmax=lim,
                            showscale=(r == 1 and c == 3), row=r, col=c)
            fig.update_xaxes(tickangle=-40, row=r, col=c)
    fig.update_layout(title="Effects before and after the edit (oriented by the before trace)",
                      height=430 * len(kinds), width=1250)
    return fig
