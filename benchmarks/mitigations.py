"""Mitigations side by side, chosen on a validation part and reported on a test part.

Every method is fitted on the train occupations only and measured on what none of them saw: the
held-out sentence shapes (interp.measure.shapes: one occupation with the pronoun elsewhere, and
two occupations competing for one pronoun), the test occupations in our templates, definitional
gender, factual recall, perplexity and KL on held-out text. The shapes' frames are split in two
(`part=`): each method is measured on both parts, the best is **chosen on the validation part**
(the rule is `score` below, fixed before any number was seen on the test part) and the table to
report is the **test part**, which no choice looked at.

Methods (the weight edits change the MLP down projections of the top six layers and the
attention output projections the demo edits: 26–27 on the bundled model, the top layer on Gemma):

- lsdm-templates: LSDM at the last token fitted on our 18 subject-pronoun templates (the
  default before issue 28);
- lsdm: the same fitted on every context (`interp.prompts.contexts`: those 18 and 12 where the
  next word is an object or possessive pronoun, each balanced on its own pronoun pair), with the
  definitional prompts kept in the same contexts: `interp.lsdm`'s default fitting set;
- lsdm-strength: lsdm asking for twice each occupation's own part of the balancing change
  (`strength=2`: a ridge solve carries only part of it over to unseen occupations; the part
  every occupation shares in a context, which carries over whole, stays as it is);
- lsdm-preserve: lsdm with λ = 300 (a tenth) and the definitional prompts kept at weight 1
  (ten times): the edit may move more, the definitional prompts hold it where gender is meant;
- lsdm-preserve-strength: lsdm-preserve with strength 1.5;
- lsdm-terms-strength: lsdm with strength 1.5 and a wider set kept where gender is meant: the
  train definitional words and the gender terms of interp/data/gender_terms.csv (kinship,
  titles, plurals; not the pronouns, not the held-out definitional words) in every context, at
  weight 0.3 (a probe that ignores them ignores held-out definitional words better:
  benchmarks/stereotype_direction.py);
- lsdm-subject: the paper's LSDM (subject's last token, bottom MLPs 0–4, its three templates);
- ft: Adam on the same weights, squared log-odds, KL to the unedited model;
- cda: the same with counterfactual data augmentation's loss;
- project: DAMA-style, each located output map loses its bias direction, (I − c rᵀ)W;
- steer: the stream entering the first edited layer loses its bias direction, at inference.

    python benchmarks/mitigations.py                                  # bundled model
    python benchmarks/mitigations.py --model gemma-3-270m --methods lsdm-templates,lsdm,ft
    python benchmarks/mitigations.py --out docs/mitigations-smollm2.md
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import interp  # noqa: E402
from interp import EDIT_TEMPLATES  # noqa: E402
from interp import capability as cap  # noqa: E402
from interp import prompts as P  # noqa: E402
from interp.common.io import atomic_path  # noqa: E402
from interp.measure.evaluate import evaluate  # noqa: E402
from interp.mitigate.finetune import finetune  # noqa: E402
from interp.mitigate.project import project, steer  # noqa: E402
from interp.studies.corpus import gender_terms  # noqa: E402

METHODS = ("lsdm-templates", "lsdm", "lsdm-strength", "lsdm-preserve", "lsdm-preserve-strength",
           "lsdm-terms-strength", "lsdm-subject", "ft", "cda", "project", "steer")
# What runs without --methods (about 30 min on 2 cores; the rest fail or trail on this model:
# docs/editing.md keeps their earlier table)
DEFAULT_METHODS = ("lsdm-templates", "lsdm", "lsdm-strength", "lsdm-preserve-strength",
                   "lsdm-subject", "ft")
# (suite, metric) → column. Direction first (50 / 0 = none), then size, then capability.
COLUMNS = {
    ("shapes.coreference_type1", "pairs_pro_preferred"): "coref 1 pairs %",
    ("shapes.coreference_type2", "pairs_pro_preferred"): "coref 2 pairs %",
    ("shapes.sentence_pairs", "pro_preferred"): "pairs %",
    ("shapes.coreference_type1", "stereotype_following"): "coref 1 follows %",
    ("shapes.coreference_type2", "stereotype_following"): "coref 2 follows %",
    ("shapes.two_participants", "stereotype_following"): "two part. follows %",
    ("shapes.deep", "stereotype_following"): "deep follows %",
    ("shapes.object_possessive", "stereotype_following"): "obj/poss follows %",
    ("shapes.sentence_pairs", "stereotype_following"): "pairs follows %",
    ("occupations", "stereotype_following"): "test occ. follows %",
    ("shapes.deep", "stereotype_correlation"): "deep r",
    ("shapes.coreference_type2", "stereotype_correlation"): "coref 2 r",
    ("occupations", "bls_correlation"): "test occ. r(BLS)",
    ("shapes.sentence_pairs", "logp_pro_minus_anti"): "pairs margin",
    ("shapes.coreference_type2", "pairs_logp_pro_minus_anti"): "coref 2 margin",
    ("shapes.two_participants", "abs_logodds"): "two part. |lo|",
    ("shapes.deep", "abs_logodds"): "deep |lo|",
    ("shapes.object_possessive", "abs_logodds"): "obj/poss |lo|",
    ("shapes.coreference_type1", "abs_logodds"): "coref 1 |lo|",
    ("shapes.coreference_type2", "abs_logodds"): "coref 2 |lo|",
    ("occupations", "abs_logodds"): "test occ. |lo|",
    ("shapes.coreference_type2", "syntax_accuracy"): "syntax acc %",
    ("definitional", "accuracy"): "definitional %",
    ("facts", "accuracy"): "facts %",
    ("perplexity", "perplexity"): "perplexity",
    ("kl", "kl"): "KL",
}
PERCENT = ("definitional %", "facts %")  # accuracies in [0, 1] shown in percent
SHARES = [c for c in COLUMNS.values() if c.endswith("%") and c not in
          ("syntax acc %", *PERCENT)]
SIZES = [c for c in COLUMNS.values() if c.endswith("|lo|")]


def fit(method: str, model, args):
    top = model.arch.n_layers - 1
    mlp = list(range(max(0, top - 5), top + 1))
    attn = [l for l in (26, 27) if l <= top] or [top]
    keep = P.definitional(model, split="train")
    kw = {"layers": mlp, "attn_layers": attn, "site": "last", "preserve_weight": 0.1,
          "n_prefixes": 0, "progress": False}
    if method == "lsdm-templates":
        return interp.lsdm(model, P.professions(model, "train"), preserve=keep, **kw)
    contexts = P.contexts(model, "train")
    if method == "lsdm":
        return interp.lsdm(model, contexts, **kw)
    if method == "lsdm-strength":
        return interp.lsdm(model, contexts, strength=2.0, **kw)
    if method == "lsdm-preserve":
        return interp.lsdm(model, contexts, **{**kw, "lam": 300.0, "preserve_weight": 1.0})
    if method == "lsdm-preserve-strength":
        return interp.lsdm(model, contexts, strength=1.5,
                           **{**kw, "lam": 300.0, "preserve_weight": 1.0})
    if method == "lsdm-terms-strength":
        return interp.lsdm(model, contexts, strength=1.5, preserve=gender_words(model, contexts),
                           **{**kw, "preserve_weight": 0.3})
    if method == "lsdm-subject":
        return interp.lsdm(model, P.professions(model, "train", templates=EDIT_TEMPLATES),
                           layers=list(range(min(5, top + 1))), site="subject", progress=False)
    train = P.professions(model, "train")
    if method in ("ft", "cda"):
        return finetune(model, train, layers=mlp, attn_layers=attn,
                        objective="balance" if method == "ft" else "cda", preserve=keep,
                        steps=args.steps, lr=args.lr, progress=False)
    if method == "project":
        return project(model, train, layers=mlp, attn_layers=attn)
    if method == "steer":
        return steer(model, train, layer=mlp[0], strength=1.0)
    raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


PRONOUNS = {"he", "him", "his", "himself", "she", "her", "hers", "herself"}


def gender_words(model, fitted) -> P.PromptSet:
    """The train definitional words and the gender terms that are neither pronouns nor held-out
    definitional words, in the templates (and pronoun slots) of the `fitted` prompts."""
    slots = {p.template: p.slot for p in fitted}
    keep = P.definitional(model, split="train", templates=list(slots), slots=slots)
    taken = set(keep.subjects()) | set(P.definitional(model, split="test").subjects()) | PRONOUNS
    more = P.from_templates(model, list(slots), [
        {"subject": w, "expected": g, "definitional": 1.0 if g == "male" else -1.0}
        for w, g in gender_terms().items() if w not in taken], slots=slots)
    return P.PromptSet([*keep, *more], name="definitional+terms-train")


def measure(model, reference, part: str) -> dict:
    suites = ("occupations", "shapes", "definitional", "facts", "perplexity") + (
        ("kl",) if reference is not None else ())
    report = evaluate(model, suites, reference=reference, part=part, n_boot=200,
                      progress=False)
    row = {}
    for (suite, metric), name in COLUMNS.items():
        hit = report.row(suite, metric)
        value = float("nan") if hit is None else float(hit.value)
        row[name] = 100 * value if name in PERCENT else value
    # the definitional suite has every word, the preserved train words too: also the others
    held_out = cap.definitional(model, P.definitional(model, split="test"), n_boot=200)
    row["held-out def. %"] = 100 * held_out.value
    return row


def score(row: pd.Series, base: pd.Series) -> float:
    """The choosing rule (lower is better): the mean distance of the stereotype shares from 50
    points, plus the mean remaining share of |log-odds| (×50, so that halving it is worth 25
    points), plus 10 points per point of definitional accuracy or facts lost beyond the issue's
    allowance (2 and 1 points) and per % of perplexity beyond +2%."""
    direction = np.mean([abs(row[c] - 50) for c in SHARES])
    size = 50 * np.mean([row[c] / base[c] for c in SIZES])
    lost = (max(0.0, base["definitional %"] - row["definitional %"] - 2)
            + max(0.0, base["facts %"] - row["facts %"] - 1)
            + max(0.0, 100 * (row["perplexity"] / base["perplexity"] - 1) - 2))
    return float(direction + size + 10 * lost)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                    help=f"Comma list of {', '.join(METHODS)}.")
    ap.add_argument("--steps", type=int, default=150, help="FT and CDA optimiser steps.")
    ap.add_argument("--lr", type=float, default=1e-4, help="FT and CDA learning rate.")
    ap.add_argument("--out", default=None, help="Also write the tables here (markdown).")
    args = ap.parse_args()
    model = interp.load_model(args.model) if args.model else interp.load_model()
    reference = cap.next_token_logprobs(model)
    print(f"{model!r}", flush=True)
    rows = {"validation": {}, "test": {}}
    for part in rows:
        rows[part]["unedited"] = {**measure(model, None, part), "fit s": 0.0}
    for method in args.methods.split(","):
        t = time.perf_counter()
        edit = fit(method, model, args)
        seconds = time.perf_counter() - t
        with edit.applied(model):
            for part in rows:
                rows[part][method] = {**measure(model, reference, part), "fit s": seconds}
        print(f"{method}: fitted in {seconds:.0f} s", flush=True)
    tables = {part: pd.DataFrame(r).T for part, r in rows.items()}
    val = tables["validation"]
    scores = {m: score(val.loc[m], val.loc["unedited"]) for m in val.index}
    val["score (lower better)"] = pd.Series(scores)
    chosen = min((m for m in scores if m != "unedited"), key=scores.get)
    text = [f"# Mitigations on {model.name}", "",
            f"Chosen on the validation part (score: mean distance of the stereotype shares from "
            f"50, plus the |log-odds| left, plus capability lost beyond the allowance): "
            f"**{chosen}**.", ""]
    for part in ("validation", "test"):
        table = tables[part]
        with pd.option_context("display.width", 250, "display.max_columns", None,
                               "display.float_format", "{:.3g}".format):
            print(f"\n== {part} part ==")
            print(table.T)
        text += [f"## {part} part", "", _markdown(table.T.round(3)), ""]
    print(f"\nchosen on validation: {chosen}")
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "w") as f:
            f.write("\n".join(text) + "\n")


def _markdown(frame: pd.DataFrame) -> str:
    lines = ["| | " + " | ".join(str(c) for c in frame.columns) + " |",
             "|---" * (len(frame.columns) + 1) + "|"]
    lines += ["| " + " | ".join([str(i), *(f"{v:.3g}" for v in row)]) + " |"
              for i, row in zip(frame.index, frame.to_numpy())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
