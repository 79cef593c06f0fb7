"""Plotly figures in the style of the causal-tracing papers: layers × tokens, one panel per kind."""

from __future__ import annotations

import numpy as np

from .groups import TOKEN_GROUPS

TITLES = {"resid": "residual stream", "mlp": "MLP output", "attn": "attention output",
          "head": "attention heads (last token)"}
# Effects are signed: white at 0, the kind's colour for positive, slate blue for negative.
COLORS = {"resid": "rgb(84,39,143)", "mlp": "rgb(0,109,44)", "attn": "rgb(165,15,21)",
          "head": "rgb(8,69,148)"}
NEGATIVE = "rgb(90,110,160)"


def _colorscale(kind):
    return [[0.0, NEGATIVE], [0.5, "white"], [1.0, COLORS[kind]]]


def _panels(kinds):
    from plotly.subplots import make_subplots

    return make_subplots(rows=1, cols=len(kinds), subplot_titles=[TITLES[k] for k in kinds],
                         horizontal_spacing=0.1)


def trace_figure(result, prompt_id: int | None = None):
    """Heatmaps of the effect. With `prompt_id`, that prompt's tokens (subject marked with *);
    otherwise the mean over prompts, by token group. Effects are oriented by each prompt's total
    effect: + restores the clean outcome."""
    kinds = list(result.spec["kinds"])
    fig = _panels(kinds)
    if prompt_id is not None:
        p = result.prompts.set_index("prompt_id").loc[prompt_id]
        labels = [f"{t!r}{'*' if p.subject_start <= i < p.subject_end else ''}"
                  for i, t in enumerate(p.tokens)]
        sign = float(result.orientation()[prompt_id])
        title = (f"{p.text!r}: effect of restoring each site ({result.spec['metric']}, "
                 f"{'+' if sign > 0 else '−'} = toward the clean outcome)")
    else:
        labels = None
        title = (f"Mean effect over {len(result.prompts)} prompts ({result.spec['metric']}, "
                 f"{result.spec['corruption']['type']} corruption; + = toward the clean outcome)")
    g = result.grouped() if prompt_id is None else None
    for col, kind in enumerate(kinds, start=1):
        if prompt_id is not None:
            f = result.frame[(result.frame.prompt_id == prompt_id) & (result.frame.kind == kind)]
            f = f.assign(effect=f["effect"] * sign)
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
        values = z.to_numpy()
        lim = float(np.nanmax(np.abs(values))) if values.size else 1.0
        right = fig.layout[f"xaxis{col if col > 1 else ''}"].domain[1]
        fig.add_heatmap(z=values, x=x, y=list(z.index), colorscale=_colorscale(kind),
                        zmid=0, zmin=-(lim or 1.0), zmax=lim or 1.0,
                        colorbar=dict(x=right + 0.005, len=0.9, thickness=10),
                        row=1, col=col, hovertemplate="layer %{y}<br>%{x}<br>effect %{z:.4f}"
                        "<extra></extra>")
        fig.update_xaxes(tickangle=-40, row=1, col=col)
        fig.update_yaxes(title_text="layer" if col == 1 else None, row=1, col=col)
    fig.update_layout(title=title, height=540, width=400 * len(kinds) + 120,
                      margin=dict(b=150))
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
