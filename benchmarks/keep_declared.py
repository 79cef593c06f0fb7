"""Does the gender edit keep a declared pronoun? The validated gender edit (`interp.debias`)
without and with each way of keeping it, measured on what the fit never saw. The ways, each a
comma list of settings (--variant, repeatable; default the two below):

- `keep_declared=true`: the misgendering contrast's he/she-declared train prompts preserved
  (their unedited outputs are targets, weighted by preserve_weight), as the definitional words
  are; `keep_declared=true,preserve_weight=1.0` weighs them as the fitted prompts;
- `follow_declared=true` (LSDM): the same prompts fitted with targets that make the declared
  pronoun the likeliest (the misgendering contrast's goal).

Measured:

- the likelihood misgendering rate and the implicit-reward audit on the TANGO-layout items
  (interp/data/misgendering.csv: none of the fitted or preserved sentences), he/she-declared
  (binary) and they/xe/ey/fae-declared (TGNB) apart;
- the gender measures the recipe was chosen on: the test occupations' |log-odds| and the share
  following the stereotype, definitional accuracy, facts, perplexity.

    python benchmarks/keep_declared.py [--model gemma-3-270m] [--recipe lsdm] [--no-suites]
        [--variant keep_declared=true,preserve_weight=1.0 --variant follow_declared=true]
        [--tag follow]
Writes benchmarks/results/keep-declared-<recipe>[-<tag>]-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import interp  # noqa: E402
from interp.common.io import atomic_write  # noqa: E402
from interp.measure.capability import next_token_logprobs  # noqa: E402

SUITES = ("occupations", "definitional", "facts", "perplexity")
VARIANTS = ("keep_declared=true", "follow_declared=true")


def settings(text: str) -> dict:
    """"name=value,..." as keyword arguments (true/false, numbers, else text)."""
    out = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        low = value.strip().lower()
        out[name.strip()] = (low == "true" if low in ("true", "false")
                             else float(value) if low.replace(".", "", 1).isdigit() else value)
    return out


def values(report) -> dict:
    return {f"{r.suite}:{r.metric}": float(r.value) for r in report.frame.itertuples()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="default: the bundled SmolLM2")
    ap.add_argument("--recipe", default="auto", help="the recipe to fit (default: validated)")
    ap.add_argument("--no-suites", action="store_true", help="only the audit")
    ap.add_argument("--variant", action="append", default=None,
                    help="settings of one way to keep declared pronouns, e.g. "
                         "keep_declared=true,preserve_weight=1.0 (repeatable)")
    ap.add_argument("--no-plain", action="store_true",
                    help="skip the edit without a variant (its row is in an earlier run's file)")
    ap.add_argument("--tag", default="",
                    help="a word in the results file's name, so that runs of other variants "
                         "do not overwrite each other")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    model = interp.load_model(args.model) if args.model else interp.load_model()
    suites = () if args.no_suites else SUITES
    record: dict = {"model": model.name, "recipe": args.recipe,
                    "unedited": values(interp.evaluate(model, suites)) if suites else {}}
    reference = next_token_logprobs(model)
    for variant in ((() if args.no_plain else ("",)) + tuple(args.variant or VARIANTS)):
        t = time.perf_counter()
        edit = interp.debias(model, args.recipe, **settings(variant))
        fit_s = time.perf_counter() - t
        audit = interp.reward_audit(model, model, "misgendering", edit=edit, progress=False)
        with edit.applied(model):
            after = values(interp.evaluate(model, (*suites, "kl"), reference=reference))
        record[variant or "edit"] = {
            "recipe": edit.meta["recipe"], "fit_s": round(fit_s, 1), "after": after,
            "audit": {k: v for k, v in audit.summary.items() if not k.endswith(("_lo", "_hi"))}}
        print(variant or "edit", json.dumps(record[variant or "edit"], indent=1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    name = f"keep-declared-{args.recipe}{tag}-{model.name.split('/')[-1]}.json"
    with atomic_write(args.out / name) as f:
        f.write(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
