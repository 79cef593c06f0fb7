"""Implicit-reward audit on the bundled model: the default LSDM edit against the unedited model.

Audits 1,000 items of each shipped set (seeded sample): what the edit makes the model prefer,
per identity group, and how long the audit takes (the target: under 2 minutes per 1,000 items
on a 2-core CPU). Fits the default LSDM edit first unless --edit gives one.

    python benchmarks/reward_audit.py
    python benchmarks/reward_audit.py --edit runs/edit/edit.safetensors --items 2000
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import interp  # noqa: E402
from interp import prompts as P  # noqa: E402
from interp.studies import audit_items  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edit", default=None, help="An edit file (default: fit interp.lsdm).")
    ap.add_argument("--items", type=int, default=1000, help="Items per set (default 1000).")
    args = ap.parse_args()
    model = interp.load_model()
    if args.edit:
        edit = interp.Edit.load(args.edit)
    else:
        t = time.perf_counter()
        edit = interp.lsdm(model, P.professions(model, "train"), progress=False)
        print(f"fitted the default LSDM edit in {time.perf_counter() - t:.0f} s: {edit!r}")
    audit_sets(model, edit, args.items, "edited")


def audit_sets(model, edit, n_items: int, policy: str) -> None:
    """Audit `edit` against the unedited model on a seeded sample of `n_items` of each shipped
    item set, timed (also used by story_dpo.py)."""
    for name in audit_items.SETS:
        items = audit_items.SETS[name]()
        items = items.sample(n=min(n_items, len(items)), random_state=0)
        t = time.perf_counter()
        result = interp.reward_audit(model, model, items, edit=edit, progress=False)
        print(f"\n== reward audit, {name}: {len(items)} items in {time.perf_counter() - t:.1f} "
              f"s (policy: {policy}, reference: unedited)")
        print(result.table())
        print(result.tables["identities"].round(4).to_string(index=False))


if __name__ == "__main__":
    main()
