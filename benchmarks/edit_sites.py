"""Edit sites: the paper's LSDM at the subject against LSDM at the prompt's last token.

Fits each edit on the train occupations only and measures, on the bundled model (or --model):
bias on the test occupations over every template (and over the templates the edit never saw),
bias on the held-out sentence shapes no edit is fitted on (interp.measure.shapes),
definitional gender (all words, and the words an edit did not preserve), factual recall,
perplexity and KL on held-out text, and the fit time (statistics cached after the first fit).

- subject: keys at the subject's last token in the bottom MLPs (layers 0–4), the edit templates.
- last: keys at the last token in the top MLPs (layers 24–29), every template (--last-templates
  12 holds 6 out, to measure how the edit carries over to unseen templates), bare prompts (a
  prefix doubles the fit time and did not help), with the train-split definitional prompts
  preserved (weight 0.1): the edit must not move "The king said that", only the occupations.
  Changes are relative, in points for accuracies and shares.

    python benchmarks/edit_sites.py                         # both, default settings
    python benchmarks/edit_sites.py --sites last --last-templates 12 --preserve-weight 0.07
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402

import interp  # noqa: E402
from interp import EDIT_TEMPLATES, LAST_TOKEN_TEMPLATES  # noqa: E402
from interp import capability as cap  # noqa: E402
from interp import prompts as P  # noqa: E402
from interp.measure.shapes import score_shapes  # noqa: E402


def shape_bias(model) -> dict:
    """Bias on the held-out sentence shapes (interp.measure.shapes), which no edit is fitted on."""
    out = {}
    for family, r in score_shapes(model, n_boot=10, progress=False).items():
        if family == "sentence_pairs":
            out["sentence pairs: % preferring the stereotype"] = r.summary["pro_preferred"]
        else:
            out[f"{family}: |log-odds|"] = r.summary["abs_logodds"]
    return out


def measure(model, reference, last_templates=LAST_TOKEN_TEMPLATES) -> dict:
    test = interp.bias(model, P.professions(model, "test"), progress=False).frame
    defs = interp.bias(model, P.definitional(model), progress=False).frame
    held_words = defs.split == "test"
    signed = defs.logodds * defs.expected.map({"female": 1.0, "male": -1.0})
    row = {"test |log-odds|": test.logodds.abs().mean(), "test |gap|": test.abs_gap.mean(),
           "|log-odds|, templates the subject edit did not see":
               test.logodds.abs()[~test.template.isin(EDIT_TEMPLATES)].mean(),
           "|log-odds|, templates the last-token edit did not see":
               test.logodds.abs()[~test.template.isin(last_templates)].mean(),
           "definitional acc": defs.definitional_correct.mean(),
           "definitional acc (test words)": defs.definitional_correct[held_words].mean(),
           "definitional log-odds": signed.mean(),
           **shape_bias(model),
           "facts": cap.factual_recall(model, n_boot=10).value,
           "perplexity": cap.perplexity(model, n_boot=10).value}
    if reference is not None:
        row["KL"] = cap.kl_divergence(model, reference, n_boot=10).value
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--sites", default="subject,last")
    ap.add_argument("--lam", type=float, default=3000.0)
    ap.add_argument("--preserve-weight", type=float, default=0.1)
    ap.add_argument("--prefixes", type=int, default=0,
                    help="Generated prefixes per prompt of the last-token edit (0: bare only).")
    ap.add_argument("--last-layers", default="24,25,26,27,28,29")
    ap.add_argument("--attn-layers", default="",
                    help="Attention layers the last-token edit changes too (e.g. 26,27).")
    ap.add_argument("--last-templates", type=int, default=len(LAST_TOKEN_TEMPLATES),
                    help="How many of the templates the last-token edit is fitted on (first N).")
    ap.add_argument("--save", default=None, help="Directory to save each edit in.")
    args = ap.parse_args()
    model = interp.load_model(args.model) if args.model else interp.load_model()
    reference = cap.next_token_logprobs(model)
    top = model.arch.n_layers - 1
    last_layers = [min(int(x), top) for x in args.last_layers.split(",")]
    last_templates = P.TEMPLATES[:args.last_templates]
    configs = {
        "subject": {"prompts": P.professions(model, "train", templates=EDIT_TEMPLATES),
                    "layers": list(range(min(5, top + 1))), "site": "subject"},
        "last": {"prompts": P.professions(model, "train", templates=last_templates),
                 "layers": sorted(set(last_layers)), "site": "last",
                 "preserve": P.definitional(model, templates=last_templates, split="train"),
                 "preserve_weight": args.preserve_weight, "n_prefixes": args.prefixes,
                 "attn_layers": [int(x) for x in args.attn_layers.split(",") if x]},
    }
    rows = {"unedited": measure(model, None, last_templates)}
    print(f"{model!r}")
    for site in args.sites.split(","):
        c = dict(configs[site])
        ps = c.pop("prompts")
        t = time.perf_counter()
        edit = interp.lsdm(model, ps, lam=args.lam, seed=0, progress=False, **c)
        seconds = time.perf_counter() - t
        print(f"{site}: {len(ps)} prompts, layers {edit.layers}, λ {args.lam:g}, fit {seconds:.0f} s "
              f"{edit.meta['seconds']}")
        if args.save:
            edit.save(os.path.join(args.save, f"{site}.safetensors"))
        with edit.applied(model):
            attn = f", attention {edit.attn_layers}" if edit.attn_layers else ""
            rows[f"{site} (layers {edit.layers[0]}–{edit.layers[-1]}{attn})"] = measure(
                model, reference, last_templates)
    table = pd.DataFrame(rows)
    base = table["unedited"]
    # Changes: accuracies and shares in points, everything else relative (%).
    fractions = table.index.str.contains("acc") | (table.index == "facts")
    percents = table.index.str.contains("%")
    for col in list(table.columns[1:]):
        change = 100 * (table[col] / base - 1)
        change = change.where(~fractions, 100 * (table[col] - base))
        table[col + " Δ"] = change.where(~percents, table[col] - base).round(1)
    with pd.option_context("display.width", 250, "display.max_columns", None,
                           "display.float_format", "{:.4f}".format):
        print(table)


if __name__ == "__main__":
    main()
