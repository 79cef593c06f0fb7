"""Story-pair consistency and preference debiasing (DPO) on the bundled model, end to end.

1. Judge both versions of our story pairs (`interp.story_consistency`), split by whole story
   templates: the held-apart templates are never trained on.
2. Build DPO preference pairs from the model's own mismatches on the training templates
   (`interp.studies.preference_pairs`), keep the first --pairs.
3. Train the weights LSDM edits, located the way `interp.lsdm` locates them (a trace of 40
   train occupation prompts: top MLPs and their strongest attention layers), with DPO.
4. Report the held-apart mismatch rate before and after, re-trace the occupation prompts and
   run the bias and capability suites before and after (`interp.verify`), audit the tuned
   model against its reference (`interp.reward_audit`), and export it.

Targets: DPO on 200 pairs under 15 minutes on this CPU; the held-apart mismatch
rate down by at least a third; perplexity up at most 5%, facts down at most 2 points.

    python benchmarks/story_dpo.py
    python benchmarks/story_dpo.py --pairs 100 --epochs 2 --out runs/story_dpo
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

import interp  # noqa: E402
from interp import prompts as P  # noqa: E402
from interp.studies import stories  # noqa: E402
from reward_audit import audit_sets  # noqa: E402  (this folder, on the path when run)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=200, help="preference pairs (default 200)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--audit-items", type=int, default=1000)
    ap.add_argument("--out", default="runs/story_dpo", help="where the edit and export go")
    args = ap.parse_args()
    model = interp.load_model()
    train, test = stories.split("ours")
    print(f"story pairs: {len(train)} train ({train.template_id.nunique()} templates), "
          f"{len(test)} held apart ({test.template_id.nunique()} templates)")

    clock = time.perf_counter()
    judged = interp.story_consistency(model, train, progress=False)
    prefs = stories.preference_pairs(judged)
    print(f"train mismatch rate {judged.summary['mismatch_rate']:.3f}: {len(prefs)} preference "
          f"pairs, using {min(args.pairs, len(prefs))}")
    prefs = prefs.iloc[: args.pairs]
    sites, _ = interp.find_sites(model, P.professions(model, "train"), "last", progress=False)
    layers, attn_layers = sites.mlp, sites.attn
    print(f"sites: {sites.text()} ({sites.why})")
    t = time.perf_counter()
    edit = interp.dpo(model, prefs, layers=layers, attn_layers=attn_layers, beta=args.beta,
                      lr=args.lr, epochs=args.epochs, progress=False)
    fit = time.perf_counter() - t
    total = time.perf_counter() - clock
    print(f"DPO: {edit.meta['steps']} steps in {fit:.0f} s (judging, trace and DPO: "
          f"{total:.0f} s); loss {edit.meta['loss_first'][1]:.4f} -> "
          f"{edit.meta['loss_last'][1]:.4f}")
    margins = interp.preference_margins(model, prefs), interp.preference_margins(model, prefs,
                                                                                edit)
    print(f"train preference margin log π(chosen) − log π(rejected): {margins[0].mean():.3f} "
          f"-> {margins[1].mean():.3f} (chosen preferred: {np.mean(margins[0] > 0):.0%} -> "
          f"{np.mean(margins[1] > 0):.0%})")

    before = interp.story_consistency(model, test, progress=False)
    after = interp.story_consistency(model, test, edit=edit, progress=False)
    print("\n== held-apart story pairs, before -> after")
    for key in ("mismatch_rate", "answer_distance", "female_harsher_share", "share_moral",
                "share_both", "share_immoral"):
        b, a = before.summary.get(key, np.nan), after.summary.get(key, np.nan)
        ci = (f" [{after.summary[key + '_lo']:.3f}, {after.summary[key + '_hi']:.3f}]"
              if key + "_lo" in after.summary else "")
        print(f"{key:>22}: {b:.3f} -> {a:.3f}{ci}")
    cut = 1 - after.summary["mismatch_rate"] / before.summary["mismatch_rate"]
    print(f"mismatch rate cut by {cut:.0%} (target: a third)")

    print("\n== re-trace and suites (interp.verify, occupation prompts)")
    check = interp.verify(model, edit, located, progress=False)
    print(check.table())
    for component, layer in edit.sites():
        w = model.arch.edit_weight(model.bridge, component, layer).detach()
        rel = float(edit.delta(layer, component).norm() / w.norm())
        print(f"  {component} {layer}: |ΔW| / |W| = {rel:.4f}")

    audit_sets(model, edit, args.audit_items, "DPO-tuned")

    path = edit.save(os.path.join(args.out, "edit.safetensors"))
    exported = interp.export(model, os.path.join(args.out, "model.safetensors"),
                             "safetensors", edit=edit)
    print(f"\nedit saved to {path}; exported: {exported!r}")


if __name__ == "__main__":
    main()
