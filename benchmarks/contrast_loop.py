"""A contrast other than he/she through the whole loop on a real model: locate, edit, verify on
published data the fit never saw.

    python benchmarks/contrast_loop.py --contrast misgendering --tango misgendering_prompts.csv
    python benchmarks/contrast_loop.py --contrast religion --crows-pairs crows_pairs_anonymized.csv \
        --bbq Religion.jsonl
    python benchmarks/contrast_loop.py --model gemma-3-270m --contrast misgendering

1. Locate: the contrast's trace (`interp.find_sites`: 40 train prompts or --site-prompts, noise on the traced span,
   MLP and attention cells) gives the edit's sites; the atlas's summary of the same trace reads
   where the effects sit (bottom-third share of the MLP effect at the span's last token, top-third share of the
   attention effect at the last token: the LSDM paper's pattern).
2. Edit: LSDM with the contrast (`interp.lsdm(model, contrast=...)`), with --recipe ft/cda a
   fine-tune of the same weights, or with --recipe project the projection baseline (the
   groups' preference erased from the same outputs), fitted on the contrast's train prompts
   only (our own contexts filled with the published group terms).
3. Verify, before → after:
   - the contrast's test part (subjects never fitted);
   - misgendering: the likelihood misgendering rate and the implicit-reward audit on the
     TANGO-layout items (interp/data/misgendering.csv, sentences of none of the fitted
     contexts) and, with --tango, on TANGO's published misgendering_prompts.csv; TGNB (they,
     xe, ey, fae) and binary (he, she) declarations apart;
   - religion (or race): CrowS-Pairs' pairs of that bias type (share preferring the more
     stereotyping sentence; 50 is none) and BBQ's items of that category (bias score in the
     ambiguous and disambiguated contexts), from the files given;
   - capability: definitional accuracy, factual recall, perplexity.
Writes benchmarks/results/contrast-<contrast>-<model>.json.
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
from interp.locate.atlas import Atlas, third_share  # noqa: E402
from interp.measure import audit_items  # noqa: E402
from interp.measure.capability import next_token_logprobs  # noqa: E402
from interp.measure.contrast import measure_contrast  # noqa: E402
from interp.measure.prompts import pick  # noqa: E402
from interp.mitigate.finetune import finetune  # noqa: E402
from interp.mitigate.project import project  # noqa: E402
from interp.mitigate.recipes import RECIPES  # noqa: E402
from interp.mitigate.sites import SITE_PROMPTS, Sites  # noqa: E402
from interp.measure.suites.crows_pairs import load_crows_pairs, score_crows_pairs  # noqa: E402

CROWS_TYPE = {"religion": "religion", "race": "race-color"}
CAPABILITY = ("definitional", "facts", "perplexity")


def contrast_parts(model, c) -> dict:
    """The contrast's summary on its train and test parts."""
    report = measure_contrast(model, c, splits=("train", "test"), progress=False)
    s = report.summary().reset_index()
    return {f"{r['split']}:{r[s.columns[1]]}": {k: float(r[k]) for k in s.columns[2:]}
            for _, r in s.iterrows()}


def misgendering(model, edit, items="misgendering") -> dict:
    """The implicit-reward audit of the edit against the unedited model on misgendering items
    (the bundled TANGO-layout ones, or TANGO's published file), with both models' likelihood
    misgendering rate per group."""
    audit = interp.reward_audit(model, model, items, edit=edit, progress=False)
    return {k: v for k, v in audit.summary.items() if not k.endswith(("_lo", "_hi"))}


def values(report) -> dict:
    return {f"{r.suite}:{r.metric}": float(r.value) for r in report.frame.itertuples()}


def crows(model, path, bias_type) -> float:
    pairs = load_crows_pairs(path, bias_type=bias_type)
    return float(score_crows_pairs(model, pairs, progress=False).summary["stereotype_score"])


def bbq(model, path) -> dict:
    report = interp.persona_bias(model, str(path), personas=[], progress=False, n_boot=200)
    return {k: v for k, v in report.summary.items()
            if k.startswith(("bias_", "accuracy_")) and not k.endswith(("_lo", "_hi"))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="default: the bundled SmolLM2")
    ap.add_argument("--contrast", default="misgendering")
    ap.add_argument("--crows-pairs", type=Path, default=None)
    ap.add_argument("--tango", type=Path, default=None,
                    help="TANGO's misgendering_prompts.csv as published (amazon-science/tango)")
    ap.add_argument("--bbq", type=Path, default=None, help="BBQ's JSONL of the contrast's category")
    ap.add_argument("--recipe", default="lsdm", choices=("lsdm", "ft", "cda", "project"),
                    help="the edit: LSDM, a fine-tune of the same weights on the same prompts, "
                         "or the projection baseline (balance contrasts)")
    ap.add_argument("--site-prompts", type=int, default=SITE_PROMPTS,
                    help="train prompts traced to find the sites (a follow contrast's trace "
                         "costs several sequences per prompt)")
    ap.add_argument("--sites", default=None,
                    help="MLP and attention layers, e.g. 24,25,26,27,28,29/27,28: no trace")
    ap.add_argument("--save-edit", type=Path, default=None,
                    help="also write the edit there (an edit file, to read it again later)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    c = interp.contrast(args.contrast)
    if c.goal == "follow" and args.recipe in ("cda", "project"):
        ap.error(f"--recipe {args.recipe} cannot follow the declared group of {c.name!r}; "
                 "use lsdm or ft")
    model = interp.load_model(args.model) if args.model else interp.load_model()
    record: dict = {"model": model.name, "contrast": c.name}
    t0 = time.perf_counter()

    if args.sites:  # a previous run's sites: no trace, no localisation
        mlp, attn = ([int(x) for x in part.split(",") if x]
                     for part in args.sites.partition("/")[::2])
        sites = Sites(mlp, attn, "given")
        record["sites"] = {"mlp": sites.mlp, "attn": sites.attn, "given": True}
    else:
        traced = pick(c.prompts(model, "train"), args.site_prompts, seed=0)
        sites, located = interp.find_sites(model, traced, contrast=c, progress=False)
        record["site_prompts"] = len(traced)
        record["sites"] = {"mlp": sites.mlp, "attn": sites.attn}
        record["trace_s"] = round(time.perf_counter() - t0, 1)
        at = Atlas({c.name: located}, {"model": model.name})
        record["localisation"] = at.summary().iloc[0].to_dict()
        record["localisation"]["mlp_share_top_third_at_span"] = third_share(
            at.profile(c.name, "mlp"), "top")
        print("sites", sites.text(), "|", record["localisation"], flush=True)

    t1 = time.perf_counter()
    if args.recipe == "lsdm":
        edit = interp.lsdm(model, contrast=c, layers=sites.mlp, attn_layers=sites.attn,
                           strict=False, progress=False)
    elif args.recipe == "project":
        edit = project(model, layers=sites.mlp, attn_layers=sites.attn, contrast=c)
    else:
        edit = finetune(model, c.prompts(model, "train"), layers=sites.mlp,
                        attn_layers=sites.attn, objective=RECIPES[args.recipe].method,
                        contrast=c, progress=False)
    if args.save_edit:
        edit.save(args.save_edit)
    record["recipe"] = args.recipe
    record["edit_s"] = round(time.perf_counter() - t1, 1)
    if args.recipe == "lsdm":
        record["targets"] = {k: v for k, v in edit.meta["targets"].items() if k != "history"}
        record["fitted"] = edit.meta["fitted_prompts"]
        print("fitted", record["fitted"], flush=True)
    elif args.recipe != "project":
        record["loss"] = {"first": edit.meta["loss_first"], "last": edit.meta["loss_last"]}

    before = {"contrast": contrast_parts(model, c)}
    reference = next_token_logprobs(model)
    before["capability"] = values(interp.evaluate(model, CAPABILITY, progress=False))
    with edit.applied(model):
        after = {"contrast": contrast_parts(model, c)}
        after["capability"] = values(interp.evaluate(model, (*CAPABILITY, "kl"),
                                                     reference=reference, progress=False))
    record["before"], record["after"] = before, after
    save(args.out, c.name, args.recipe, model, record)  # the audits below take long
    if c.name == "misgendering":
        record["audit"] = misgendering(model, edit)
        if args.tango:
            record["audit_tango"] = misgendering(model, edit,
                                                 audit_items.misgendering(args.tango))
    if args.crows_pairs and c.name in CROWS_TYPE:
        before["crows_pairs"] = crows(model, args.crows_pairs, CROWS_TYPE[c.name])
        with edit.applied(model):
            after["crows_pairs"] = crows(model, args.crows_pairs, CROWS_TYPE[c.name])
    if args.bbq:
        before["bbq"] = bbq(model, args.bbq)
        with edit.applied(model):
            after["bbq"] = bbq(model, args.bbq)
    record["before"], record["after"] = before, after
    record["total_s"] = round(time.perf_counter() - t0, 1)
    save(args.out, c.name, args.recipe, model, record)
    print(json.dumps(record, indent=1, default=str))


def save(out: Path, name: str, recipe: str, model, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    recipe = "" if recipe == "lsdm" else f"-{recipe}"
    path = out / f"contrast-{name}{recipe}-{model.name.split('/')[-1]}.json"
    with atomic_write(path) as f:
        f.write(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main()
