"""Mitigations side by side: LSDM against the paper's baselines and the projection variants, on
the same fitting prompts and the same evaluation.

Every method is fitted on the train occupations (all 18 templates, except the paper's subject
edit, which keeps its own three) and measured on what none of them saw: the test occupations,
the four held-out sentence-shape families (interp.measure.shapes), definitional gender, factual
recall, perplexity and KL on held-out text. The weight-editing methods change the same weights
(the MLP down projections of layers 24–29 and the attention output projections of 26–27 on the
bundled model: the demo's sites) and keep the train-split definitional prompts:

- lsdm: the demo's recipe (last token, closed form, definitional prompts preserved at 0.1);
- lsdm-subject: the paper's LSDM (subject's last token, bottom MLPs 0–4);
- ft: Adam on the same weights, squared log-odds, KL to the unedited model on neutral text and
  the preserved prompts;
- cda: the same with counterfactual data augmentation's loss (both pronouns as continuations);
- project: DAMA-style, each located output map loses its bias direction, (I − c rᵀ)W;
- steer: the stream entering layer 24 loses its bias direction about its mean, at inference
  (interp.mitigate.project explains c and r: LEACE's erasure of one concept).

    python benchmarks/mitigations.py                       # every method (~25 min, 2 cores)
    python benchmarks/mitigations.py --methods lsdm,ft --out figures/mitigations.md
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
from edit_sites import measure  # noqa: E402

import interp  # noqa: E402
from interp import EDIT_TEMPLATES  # noqa: E402
from interp import capability as cap  # noqa: E402
from interp import prompts as P  # noqa: E402
from interp.common.io import atomic_path  # noqa: E402
from interp.mitigate.finetune import finetune  # noqa: E402
from interp.mitigate.project import project, steer  # noqa: E402

METHODS = ("lsdm", "lsdm-subject", "ft", "cda", "project", "steer")
COLUMNS = {  # measure()'s keys → the table's, in order
    "test |log-odds|": "test occupations |log-odds|",
    "two_participants: |log-odds|": "two participants |log-odds|",
    "deep: |log-odds|": "deep |log-odds|",
    "object_possessive: |log-odds|": "object/possessive |log-odds|",
    "sentence pairs: % preferring the stereotype": "pairs % stereotype",
    "definitional acc": "definitional acc",
    "facts": "facts",
    "perplexity": "perplexity",
    "KL": "KL",
}


def fit(method: str, model, args):
    train = P.professions(model, "train")
    keep = P.definitional(model, split="train")
    top = model.arch.n_layers - 1
    mlp = list(range(max(0, top - 5), top + 1))
    attn = [l for l in (26, 27) if l <= top] or [top]
    if method == "lsdm":
        return interp.lsdm(model, train, layers=mlp, attn_layers=attn, site="last",
                           preserve=keep, preserve_weight=0.1, n_prefixes=0, progress=False)
    if method == "lsdm-subject":
        return interp.lsdm(model, P.professions(model, "train", templates=EDIT_TEMPLATES),
                           layers=list(range(min(5, top + 1))), site="subject", progress=False)
    if method in ("ft", "cda"):
        return finetune(model, train, layers=mlp, attn_layers=attn,
                        objective="balance" if method == "ft" else "cda", preserve=keep,
                        steps=args.steps, lr=args.lr, progress=False)
    if method == "project":
        return project(model, train, layers=mlp, attn_layers=attn)
    if method == "steer":
        return steer(model, train, layer=mlp[0], strength=1.0)
    raise SystemExit(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=150, help="FT and CDA optimiser steps.")
    ap.add_argument("--lr", type=float, default=1e-4, help="FT and CDA learning rate.")
    ap.add_argument("--out", default=None, help="Also write the table here (markdown).")
    args = ap.parse_args()
    model = interp.load_model(args.model) if args.model else interp.load_model()
    reference = cap.next_token_logprobs(model)
    print(f"{model!r}", flush=True)
    rows = {"unedited": {**measure(model, None), "fit s": 0.0}}
    for method in args.methods.split(","):
        t = time.perf_counter()
        edit = fit(method, model, args)
        seconds = time.perf_counter() - t
        with edit.applied(model):
            rows[method] = {**measure(model, reference), "fit s": seconds}
        print(f"{method}: fitted in {seconds:.0f} s", flush=True)
    table = pd.DataFrame(rows).T
    table = table[[*COLUMNS, "fit s"]].rename(columns=COLUMNS)
    base = table.loc["unedited"]
    change = pd.DataFrame(index=table.index)
    for col in table.columns[:4]:
        change[col + " Δ%"] = (100 * (table[col] / base[col] - 1)).round(0)
    for col in ("pairs % stereotype",):
        change[col + " Δpt"] = (table[col] - base[col]).round(1)
    for col in ("definitional acc", "facts"):
        change[col + " Δpt"] = (100 * (table[col] - base[col])).round(1)
    change["perplexity Δ%"] = (100 * (table["perplexity"] / base["perplexity"] - 1)).round(1)
    with pd.option_context("display.width", 250, "display.max_columns", None,
                           "display.float_format", "{:.3f}".format):
        print(table)
        print(change)
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "w") as f:
            f.write(_markdown(table.round(3)) + "\n" + _markdown(change) + "\n")


def _markdown(frame: pd.DataFrame) -> str:
    lines = ["| method | " + " | ".join(frame.columns) + " |",
             "|---" * (len(frame.columns) + 1) + "|"]
    lines += ["| " + " | ".join([str(i), *(f"{v:g}" for v in row)]) + " |"
              for i, row in zip(frame.index, frame.to_numpy())]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
