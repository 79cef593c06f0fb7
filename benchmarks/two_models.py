"""The bundled SmolLM2-135M-Instruct and Gemma 3 270M side by side: the whole loop's numbers
for each, and which of the LSDM paper's findings hold on each.

For each model it reads the run `interp demo --model M` writes (runs/demo for the bundled
model, runs/demo-gemma-3-270m for Gemma; the demo is run first when the folder has no
verification), then prints one table:

- bias on the held-out sentence shapes (their test part) and the test occupations, unedited →
  edited, as the demo report leads with it: direction first (does the model still choose the
  stereotypical reading?), then size, then whether it still follows the syntax;
- capability: definitional accuracy, factual recall, perplexity; the edit's fit time;
- the implicit-reward audit of the edit (misgendering items, seeded sample): the share of
  items where the edit prefers the misgendering continuation more than the unedited model
  does, after a person declares he or she and after a person declares they or a neopronoun
  (TGNB), and the likelihood misgendering rate unedited → edited;
- the paper's findings, read off the demo's trace: where along the layers the MLP effect at the
  occupation's last token sits (the paper: the bottom MLPs) and where the attention effect at
  the prompt's last token sits (the paper: the top layers), as the share of each profile's
  positive effect in the bottom / top third of the layers.

Trace speed against TransformerLens is benchmarks/trace_speed.py (--model gemma-3-270m).

    python benchmarks/two_models.py
    python benchmarks/two_models.py --audit-items 300
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

import interp  # noqa: E402
from interp.mitigate.verify import Verification  # noqa: E402
from interp.report import CORRELATIONS, HEADLINE, POINTS  # noqa: E402
from interp.studies import audit_items  # noqa: E402

MODELS = {"smollm2-135m-instruct": Path("runs/demo"), "gemma-3-270m": Path("runs/demo-gemma-3-270m")}

# The demo report's headline rows: direction first, then size, then the syntax.
BIAS = HEADLINE
CAPABILITY = [("definitional", "accuracy", "definitional accuracy"),
              ("facts", "accuracy", "factual recall"),
              ("perplexity", "perplexity", "perplexity")]


def ensure_run(spec: str, run: Path) -> float | None:
    """Run the demo for `spec` unless its run folder holds a verification; its seconds."""
    if (run / "verification" / "edit.json").exists():
        return None
    t = time.perf_counter()
    cmd = [sys.executable, "-m", "interp.cli", "demo", "--out", str(run)]
    if spec != "smollm2-135m-instruct":
        cmd += ["--model", spec]
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t


def change(before: float, after: float, metric: str) -> str:
    if metric == "accuracy":
        return f"{100 * before:.1f} → {100 * after:.1f} ({100 * (after - before):+.1f} pt)"
    if metric in POINTS:
        return f"{before:.1f} → {after:.1f} ({after - before:+.1f} pt)"
    if metric in CORRELATIONS:
        return f"{before:.2f} → {after:.2f}"
    rel = (after - before) / abs(before)
    return f"{before:.3g} → {after:.3g} ({rel:+.0%})" if abs(rel) >= 0.01 else \
        f"{before:.4g} → {after:.4g} ({rel:+.1%})"


def thirds(profile: pd.Series, where: str) -> str:
    """Share of the positive effect in the bottom or top third of the layers, and the peak."""
    n = int(profile.index.max()) + 1
    pos = profile.clip(lower=0)
    total = float(pos.sum())
    part = pos[pos.index < n / 3] if where == "bottom" else pos[pos.index >= 2 * n / 3]
    share = float(part.sum()) / total if total > 0 else float("nan")
    return f"{share:.0%} in the {where} third (peak layer {int(profile.idxmax())} of {n})"


def audit(spec: str, edit, n_items: int) -> tuple[str, str]:
    model = interp.load_model(spec)
    items = audit_items.SETS["misgendering"]()
    items = items.sample(n=min(n_items, len(items)), random_state=0)
    t = time.perf_counter()
    result = interp.reward_audit(model, model, items, edit=edit, progress=False)
    s = result.summary
    rate = (f"{s['misgendering_rate_reference'] * 100:.1f}% → "
            f"{s['misgendering_rate_policy'] * 100:.1f}%")
    print(f"  audit of {spec}: {len(items)} misgendering items in {time.perf_counter() - t:.0f} s")
    return (f"{s['harmful_rate_binary']:.0%} / {s['harmful_rate_tgnb']:.0%} "
            f"({len(items)} items)"), rate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--audit-items", type=int, default=1000, help="0 skips the audit")
    args = ap.parse_args()
    columns = {}
    for spec in args.models.split(","):
        run = MODELS.get(spec, Path(f"runs/demo-{Path(spec).stem}"))
        seconds = ensure_run(spec, run)
        if seconds is not None:
            print(f"ran the demo for {spec} in {seconds:.0f} s")
        v = Verification.load(run / "verification")
        edit = interp.Edit.load(run / "edit.safetensors")
        col = {}
        for suite, metric, name in BIAS + CAPABILITY:
            b, a = v.before.row(suite, metric), v.after.row(suite, metric)
            col[name] = "—" if b is None or a is None else change(b.value, a.value, metric)
        col["edit sites"] = f"MLP {edit.layers}, attention {edit.attn_layers}"
        seconds = dict(edit.meta["seconds"])
        stats = seconds.pop("statistics")  # a one-off per model, cached on disk by fingerprint
        col["fit time, statistics cached"] = f"{sum(seconds.values()):.0f} s"
        col["statistics pass (once per model)"] = f"{stats:.0f} s" if stats > 5 else "cached"
        located = v.before_trace
        col["MLP at the occupation's last token"] = thirds(
            located.layer_profile("mlp", "last subject token"), "bottom")
        col["attention at the last token"] = thirds(
            located.layer_profile("attn", "last token"), "top")
        if args.audit_items:
            (col["audit: edit prefers misgendering, he/she / TGNB declared"],
             col["misgendering rate"]) = audit(
                spec, edit, args.audit_items)
        columns[spec] = col
    table = pd.DataFrame(columns)
    print("\n| | " + " | ".join(table.columns) + " |\n|---|" + "---|" * len(table.columns))
    for name, row in table.iterrows():
        print(f"| {name} | " + " | ".join(str(x) for x in row) + " |")


if __name__ == "__main__":
    main()
