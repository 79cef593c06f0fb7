"""The demo's figures and its short markdown report."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .common.io import atomic_write
from .measure.evaluate import format_ci


def bias_figure(before, after):
    """Bars of the bias numbers (occupations) before and after, with their 95% intervals."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, rep in (("before", before), ("after", after)):
        f = rep.frame[rep.frame.suite == "occupations"]
        fig.add_bar(name=label, x=f.metric.map({"abs_gap": "mean |p(he) − p(she)|",
                                                 "abs_logodds": "mean |log-odds|"}),
                    y=f.value, error_y=dict(type="data", array=f.ci_high - f.value,
                                            arrayminus=f.value - f.ci_low))
    fig.update_layout(barmode="group", title="Bias on the held-out test occupations",
                      yaxis_title="bias (0 = none)", width=700, height=450)
    return fig


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
        "change": [f"{r:+.1%}" if np.isfinite(r) else f"{c:+.4g}"
                   for c, r in zip(m.change, m.relative)],
    })
    kl = after.frame[after.frame.suite == "kl"]
    text = markdown_table(rows)
    if len(kl):
        k = kl.iloc[0]
        text += (f"\n\nKL(unedited ‖ edited) of next-token distributions on held-out prose: "
                 f"{format_ci(k.value, k.ci_low, k.ci_high)} nats per token.")
    return text


def demo_report(v, edit, located, exports, *, out, figures, seconds: float, save_figure) -> list:
    """Figures (trace before/after/difference, bias bars) and `out/report.md`."""
    figures.mkdir(parents=True, exist_ok=True)
    written = []
    written += save_figure(located.plot(), figures / "trace_before")
    written += save_figure(v.after_trace.plot(), figures / "trace_after")
    written += save_figure(v.plot(), figures / "trace_difference")
    written += save_figure(bias_figure(v.before, v.after), figures / "bias_before_after")
    sites = v.sites()
    t = edit.meta.get("targets", {})
    lines = [
        "# interp demo: locate and remove gender bias in SmolLM2-135M-Instruct", "",
        f"Wall time {seconds:.0f} s. Edit fitted on train occupations only; the bias below is "
        "measured on held-out test occupations over every template.", "",
        "## Located", "",
        f"Trace of {len(located.prompts)} train prompts ({located.spec['corruption']['type']} "
        f"corruption, metric {located.spec['metric']}). Suggested MLP layers: "
        f"{edit.meta.get('layers')}.", "",
        "## Edit", "",
        f"LSDM on layers {edit.meta.get('layers')}, λ = {edit.meta.get('lam')}, "
        f"{len(edit.meta.get('subjects', []))} subjects; targets reached mean |log-odds| "
        f"{t.get('abs_logodds_before', float('nan')):.3f} → "
        f"{t.get('abs_logodds_after', float('nan')):.3f}.", "",
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
