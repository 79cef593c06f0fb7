"""The demo's figures and its short markdown report."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common.io import atomic_write
from .measure.evaluate import format_ci
from .mitigate.keys import SITE_TOKEN

# The bias numbers a demo leads with: does the model still choose the stereotypical reading
# (direction: 50% and r = 0 are none), then how far it leans (size), then whether it still
# follows the syntax. All on what the edit was never fitted on.
HEADLINE = [
    ("shapes.coreference_type1", "pairs_pro_preferred",
     "two occupations, syntax silent: % sentence pairs preferring the stereotype"),
    ("shapes.coreference_type2", "pairs_pro_preferred",
     "two occupations, syntax decides: % sentence pairs preferring the stereotype"),
    ("shapes.sentence_pairs", "pro_preferred",
     "one occupation, pronoun deep: % sentence pairs preferring the stereotype"),
    ("shapes.deep", "stereotype_following", "pronoun deep: % of leans following the stereotype"),
    ("shapes.coreference_type2", "stereotype_following",
     "two occupations, syntax decides: % of leans following the stereotype"),
    ("shapes.deep", "stereotype_correlation",
     "pronoun deep: correlation of the lean with the stereotype score"),
    ("shapes.two_participants", "abs_logodds", "two participants: mean |log-odds|"),
    ("shapes.deep", "abs_logodds", "pronoun deep in the sentence: mean |log-odds|"),
    ("shapes.object_possessive", "abs_logodds", "object/possessive slots: mean |log-odds|"),
    ("shapes.coreference_type2", "abs_logodds", "two occupations, syntax decides: mean |log-odds|"),
    ("occupations", "abs_logodds", "test occupations, our templates: mean |log-odds|"),
    ("shapes.coreference_type2", "syntax_accuracy",
     "two occupations, genders stated: % resolved by the syntax"),
    ("declared", "misgendered_binary",
     "he/she declared: % whose likeliest pronoun is not the declared one"),
    ("declared", "misgendered_tgnb",
     "they/xe/ey/fae declared: % whose likeliest pronoun is not the declared one"),
]
# Metrics shown as percentages or correlations: their change is in points, not relative.
POINTS = ("pro_preferred", "pairs_pro_preferred", "stereotype_following",
          "pairs_stereotype_following", "syntax_accuracy", "syntax_accuracy_pro",
          "syntax_accuracy_anti", "misgendered_binary", "misgendered_tgnb")
CORRELATIONS = ("stereotype_correlation", "bls_correlation", "pairs_stereotype_correlation",
                "pairs_bls_correlation")


def bias_figure(before, after):
    """Bars of the mean |log-odds| on the held-out sentence shapes and test occupations, before
    and after, with their 95% intervals."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, rep in (("before", before), ("after", after)):
        rows = [(name, rep.row(s, m)) for s, m, name in HEADLINE if m == "abs_logodds"]
        rows = [(name.split(":")[0], r) for name, r in rows if r is not None]
        fig.add_bar(name=label, x=[n for n, _ in rows], y=[r.value for _, r in rows],
                    error_y=dict(type="data", array=[r.ci_high - r.value for _, r in rows],
                                 arrayminus=[r.value - r.ci_low for _, r in rows]))
    fig.update_layout(barmode="group", title="Bias before and after the edit: mean |log p(she) "
                      "− log p(he)| (0 = none)", yaxis_title="mean |log-odds|", width=800,
                      height=450)
    return fig


def headline(before, after, paper=None) -> str:
    """The bias numbers before, after the edit and (optionally) after the paper's edit, with
    the change relative to before, as a markdown table."""
    rows = []
    for suite, metric, name in HEADLINE:
        b, a = before.row(suite, metric), after.row(suite, metric)
        if b is None or a is None:
            continue
        row = {"bias": name.replace("|", "\\|"),  # a bare | would end the markdown cell
               "unedited": f"{b.value:.2f}" if metric in CORRELATIONS else f"{b.value:.3g}",
               "edited": _change(b.value, a.value, metric)}
        if paper is not None:
            p = paper.row(suite, metric)
            row["the paper's edit"] = "—" if p is None else _change(b.value, p.value, metric)
        rows.append(row)
    return markdown_table(pd.DataFrame(rows))


def _change(before: float, after: float, metric: str) -> str:
    if metric in POINTS:  # a share in percent: the change in points
        return f"{after:.3g} ({after - before:+.1f} pt)"
    if metric in CORRELATIONS:
        return f"{after:.2f} ({after - before:+.2f})"
    return f"{after:.3g} ({(after - before) / abs(before):+.0%})"


def markdown_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines)


def comparison_markdown(before, after) -> str:
    m = before.compare(after)
    m = m[m.before.notna()]  # the KL (after only) gets its own line below
    rows = pd.DataFrame({
        "suite": m.suite, "metric": m.metric,
        "before [95% CI]": [format_ci(*x)
                            for x in zip(m.before, m.ci_low_before, m.ci_high_before)],
        "after [95% CI]": [format_ci(*x) for x in zip(m.after, m.ci_low_after, m.ci_high_after)],
        "change": [f"{c:+.1f} pt" if metric in POINTS else f"{c:+.2f}"
                   if metric in CORRELATIONS else f"{r:+.1%}" if np.isfinite(r) else f"{c:+.4g}"
                   for metric, c, r in zip(m.metric, m.change, m.relative)],
    })
    kl = after.frame[after.frame.suite == "kl"]
    text = markdown_table(rows)
    if len(kl):
        k = kl.iloc[0]
        text += (f"\n\nKL(unedited ‖ edited) of next-token distributions on held-out prose: "
                 f"{format_ci(k.value, k.ci_low, k.ci_high)} nats per token.")
    return text


def _edit_text(edit) -> str:
    """What the edit is, in a sentence: LSDM's sites, λ and how far its targets were reached;
    a fine-tune's recipe, sites and steps."""
    m = edit.meta
    name = m.get("recipe", m.get("method"))
    if m.get("method") == "lsdm":
        t = m.get("targets", {})
        return (f"{name.upper() if name == 'lsdm' else name} at the "
                f"{SITE_TOKEN[m.get('site', 'subject')]}: MLP layers {m.get('layers')}, "
                f"attention layers {m.get('attn_layers')}, λ = {m.get('lam')}, "
                f"{m.get('n_prompts')} prompts; targets reached mean |log-odds| "
                f"{t.get('abs_logodds_before', float('nan')):.3f} → "
                f"{t.get('abs_logodds_after', float('nan')):.3f}.")
    first, last = (m.get(k, [float("nan")])[-1] for k in ("loss_first", "loss_last"))
    return (f"{name} ({m.get('recipe_does', m.get('objective', ''))}): MLP layers "
            f"{m.get('layers')}, attention layers {m.get('attn_layers')}, {m.get('n_prompts')} "
            f"prompts, {m.get('steps')} optimiser steps; bias loss {first:.3g} → {last:.3g}.")


def demo_report(v, edit, located, exports, *, out, figures, seconds: float, save_figure,
                why: str = "", paper=None) -> list:
    """Figures (trace before/after/difference, bias bars) and `out/report.md`. paper: (the
    paper's edit, its EvalReport) for one more column."""
    figures.mkdir(parents=True, exist_ok=True)
    written = []
    written += save_figure(located.plot(), figures / "trace_before")
    written += save_figure(v.after_trace.plot(), figures / "trace_after")
    written += save_figure(v.plot(), figures / "trace_difference")
    written += save_figure(bias_figure(v.before, v.after), figures / "bias_before_after")
    sites = v.sites()
    paper_edit, paper_report = paper if paper is not None else (None, None)
    lines = [
        f"# interp demo: locate and remove gender bias in {edit.meta.get('model', 'the model')}",
        "",
        f"Wall time {seconds:.0f} s. The edit is fitted on train occupations in our own templates "
        "only. The bias below is measured where it was never fitted: sentence shapes unlike "
        "those templates (`interp.measure.shapes`), then the held-out test occupations.", "",
        headline(v.before, v.after, paper_report), "",
        "## Located", "",
        f"Trace of {len(located.prompts)} train prompts ({located.spec['corruption']['type']} "
        f"corruption, metric {located.spec['metric']}). Edit sites: MLP "
        f"{edit.meta.get('layers')} and attention {edit.meta.get('attn_layers')}"
        + (f", because {why}." if why else "."), "",
        "## Edit", "",
        _edit_text(edit)
        + ("" if paper_edit is None else
           f" The paper's edit, for comparison: LSDM at the "
           f"{SITE_TOKEN[paper_edit.meta.get('site', 'subject')]}, MLP layers "
           f"{paper_edit.meta.get('layers')}."), "",
        *([f"Why this recipe: {edit.meta['chosen']}.", ""] if edit.meta.get("chosen") else []),
        "## Before and after", "", comparison_markdown(v.before, v.after), "",
        "## Indirect effects at the located sites", "",
        markdown_table(sites.round(4)), "",
        "## Exports", "",
        markdown_table(pd.DataFrame([{
            "format": r.format, "dtype": r.dtype, "path": str(r.path),
            "MiB": f"{r.size_bytes / 2**20:.1f}",
            "reload max |Δlogit|": "—" if r.max_abs_diff is None else f"{r.max_abs_diff:.3g}",
            "reload KL": "—" if r.kl is None else f"{r.kl:.3g}"} for r in exports])), "",
        "## Figures", "",
        *[f"- {p}" for p in written],
    ]
    path = out / "report.md"
    with atomic_write(path) as f:
        f.write("\n".join(lines) + "\n")
    return [*written, path]
