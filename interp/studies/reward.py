"""Implicit-reward audit between two models (after "The Root Shapes the Fruit", arXiv 2411.03700).

A preference-tuned policy π and its reference π_ref define an implicit reward
r(x, y) = β (log π(y | x) − log π_ref(y | x)), summed over y's tokens (Rafailov et al. 2023). Per
item, the margin Δr = r(x, y_harmful) − r(x, y_benign): x is shared, so the partition term
cancels, and Δr > 0 means the pair prefers the harmful continuation more than the reference does.
Per identity group: mean Δr and the harmful-preference rate P(Δr > 0), with bootstrap 95% CIs;
the gap B = mean_TGNB(Δr) − mean_binary(Δr) over matched templates; per TGNB identity term, a
Wilcoxon signed-rank test of its Δr against the binary terms' on the same templates, with Holm's
correction across terms.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pandas as pd

from ..common.errors import InterpError
from ..measure import audit_items, metrics
from ..measure.audit_items import continuation_sums, rate_queries, rated
from ..measure.suites.result import SuiteResult
from ..measure.suites.stats import put_mean, put_stat


class RewardAudit(SuiteResult):
    """`frame`: one row per item with both models' log-likelihoods, rewards and the margin;
    `summary`: per group mean margin and harmful-preference rate, the gap B (with CIs);
    `tables["identities"]`: per identity term, its mean margin and (TGNB terms) the paired test
    against the binary terms with its Holm-adjusted p-value."""

    def plot(self):
        import plotly.graph_objects as go

        t = self.tables["identities"]
        fig = go.Figure()
        for group, color in (("tgnb", "#c2185b"), ("binary", "#1565c0")):
            g = t[t.group == group]
            fig.add_bar(x=g.identity, y=g.mean_margin, name=group, marker_color=color,
                        error_y=dict(type="data", symmetric=False,
                                     array=g.margin_hi - g.mean_margin,
                                     arrayminus=g.mean_margin - g.margin_lo))
        fig.update_layout(title=f"Implicit-reward margin r(harmful) − r(benign): "
                                f"{self.meta.get('policy')} vs {self.meta.get('reference')}",
                          yaxis_title="mean Δr (95% CI)", xaxis_title="identity term")
        return fig


def _check_pair(policy, reference) -> None:
    if policy.tokenizer.get_vocab() != reference.tokenizer.get_vocab():
        raise InterpError(f"{policy.name} and {reference.name} have different tokenizers: an "
                          "implicit reward compares the same token sequences under both models")


def wilcoxon(d) -> tuple[float, float]:
    """Wilcoxon signed-rank test of paired differences `d` against 0 (zeros dropped, average
    ranks for ties, normal approximation with tie and continuity corrections). Returns
    (W+, two-sided p); NaN p with fewer than one non-zero difference."""
    d = np.asarray(d, float)
    d = d[np.isfinite(d) & (d != 0)]
    n = d.size
    if n == 0:
        return float("nan"), float("nan")
    ranks = pd.Series(np.abs(d)).rank().to_numpy()
    w = float(ranks[d > 0].sum())
    mean = n * (n + 1) / 4
    _, counts = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - (counts ** 3 - counts).sum() / 48
    if var <= 0:
        return w, float("nan")
    z = (abs(w - mean) - 0.5) / math.sqrt(var)
    return w, float(math.erfc(max(z, 0.0) / math.sqrt(2)))


def holm(p) -> np.ndarray:
    """Holm's step-down adjustment of p-values (NaN stays NaN)."""
    p = np.asarray(p, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok])]
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - k) * p[i]))
        out[i] = running
    return out


def _scores(model, frame, queries, batch_size, progress):
    """log p(harmful | x) and log p(benign | x) per item, and with `queries` (from
    `rate_queries`) the misgendering rate, in one pass: each prompt runs once for all three."""
    n = len(frame)
    contexts = list(frame.prompt) * 2 + (queries[1] if queries else [])
    conts = list(frame.harmful) + list(frame.benign) + (queries[2] if queries else [])
    lp = continuation_sums(model, contexts, conts, batch_size=batch_size, progress=progress)
    return lp[:n], lp[n: 2 * n], rated(queries[0], lp[2 * n:]) if queries else None


def reward_audit(policy, reference, items="disclosure", *, beta: float = 0.1, edit=None,
                 n_boot: int = 1000, seed: int = 0, batch_size: int = 64,
                 progress: bool | None = None) -> RewardAudit:
    """Audit what `policy` prefers over `reference`: per item the implicit-reward margin
    Δr = β[(log π(y_h|x) − log π_ref(y_h|x)) − (log π(y_b|x) − log π_ref(y_b|x))].

    items: "disclosure", "misgendering", a CSV path or a frame with template_id, identity,
    group ("tgnb" or "binary"), prompt, harmful, benign. edit: an `Edit` (e.g. LSDM's) applied
    to `policy` for its scores; `reference` may then be the same model object (its scores are
    taken before the edit is applied), which audits what the edit makes the model prefer.
    With misgendering items, the summary also gives both models' likelihood misgendering rate."""
    frame = audit_items.resolve(items).copy()
    _check_pair(policy, reference)
    bad = sorted(set(frame.group) - {"tgnb", "binary"})
    if bad:
        raise InterpError(f"item group {bad[0]!r} is neither 'tgnb' nor 'binary'")
    queries = rate_queries(frame) if "first_slot" in frame.columns else None
    kw = {"batch_size": batch_size, "progress": progress}
    ref_h, ref_b, ref_rate = _scores(reference, frame, queries, **kw)
    with (edit.applied(policy) if edit is not None else contextlib.nullcontext()):
        pol_h, pol_b, pol_rate = _scores(policy, frame, queries, **kw)
        policy_fingerprint = policy.fingerprint()
    frame["logp_policy_harmful"], frame["logp_policy_benign"] = pol_h, pol_b
    frame["logp_reference_harmful"], frame["logp_reference_benign"] = ref_h, ref_b
    frame["reward_harmful"] = beta * (pol_h - ref_h)
    frame["reward_benign"] = beta * (pol_b - ref_b)
    frame["margin"] = frame.reward_harmful - frame.reward_benign
    frame["prefers_harmful"] = (frame.margin > 0).astype(float)

    summary = {"n_items": len(frame), "beta": beta}
    boot = {"n_boot": n_boot, "seed": seed, "scale": 1.0}
    for group in ("tgnb", "binary"):
        g = frame[frame.group == group]
        summary[f"n_{group}"] = len(g)
        for key, col in (("mean_margin", "margin"), ("harmful_rate", "prefers_harmful")):
            put_mean(summary, f"{key}_{group}", g[col], **boot)
    # Matched templates: each template's mean margin per identity, then per group.
    per = frame.pivot_table(index="template_id", columns="identity", values="margin",
                            aggfunc="mean")
    groups = frame.drop_duplicates("identity").set_index("identity").group
    tg = [i for i in per.columns if groups[i] == "tgnb"]
    bi = [i for i in per.columns if groups[i] == "binary"]
    if tg and bi:
        gap = (per[tg].mean(1) - per[bi].mean(1)).dropna().to_numpy()
        put_stat(summary, "gap_B", lambda idx: gap[idx].mean(1), gap.size, n_boot=n_boot,
                 seed=seed)
    rows = []
    for identity in per.columns:
        v = frame.margin[frame.identity == identity].to_numpy()
        lo, hi = metrics.bootstrap_ci(v, n_boot=n_boot, seed=seed)
        row = {"identity": identity, "group": groups[identity], "n_items": len(v),
               "mean_margin": float(v.mean()), "margin_lo": lo, "margin_hi": hi,
               "harmful_rate": float((v > 0).mean())}
        if groups[identity] == "tgnb" and bi:
            d = (per[identity] - per[bi].mean(1)).dropna()
            row["n_templates"] = len(d)
            row["gap_vs_binary"] = float(d.mean())
            row["wilcoxon_w"], row["p"] = wilcoxon(d)
        rows.append(row)
    table = pd.DataFrame(rows)
    if "p" in table:
        table["p_holm"] = holm(table.p)
    if queries is not None:
        for who, rate in (("policy", pol_rate), ("reference", ref_rate)):
            put_mean(summary, f"misgendering_rate_{who}", rate.misgendered, **boot)
            for group in ("tgnb", "binary"):
                put_mean(summary, f"misgendering_rate_{who}_{group}",
                         rate.misgendered[rate.group == group], **boot)
    meta = {"suite": "reward_audit", "policy": policy.name, "reference": reference.name,
            "policy_fingerprint": policy_fingerprint,
            "reference_fingerprint": reference.fingerprint(),
            "edit": None if edit is None else {k: edit.meta.get(k) for k in
                                               ("method", "layers", "attn_layers", "site")},
            "items": items if isinstance(items, str) else str(items)
            if not isinstance(items, pd.DataFrame) else "custom", "beta": beta,
            "n_boot": n_boot, "seed": seed}
    return RewardAudit("reward_audit", frame, summary, {"identities": table}, meta)
