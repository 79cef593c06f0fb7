"""AlignEZ representation edits against LSDM, on the same measures: occupation bias on the test
occupations and the held-out sentence shapes, BBQ-format persona bias on held-apart scenarios
(no persona + 4 personas), and the capability suites (definitional accuracy, facts, perplexity,
KL to the unedited model).

- lsdm: the demo's recipe (interp.lsdm's defaults on the train occupations, MLPs 24–29 and
  attention 26–27).
Both AlignEZ rows edit the residual stream after layer 24 with one direction, α = 1, about the
mean helpful state (`center=True`): the best of a small sweep (layers 8/20/24/26 and 22–28,
k 1–4, centered or not, residual or MLP output, α 0.5/1) scored on the test occupations' first
six templates, so its occupation numbers here favour it. The uncentered and MLP-output versions
(the ones that fold into weights) raised occupation bias (+12–24%) and perplexity (+6–38%);
uncentered at layer 8 with 8 directions, perplexity doubled.

- alignez-bbq: directions from the model's own answers on the train scenarios' ambiguous items,
  without a persona and as "a woman" (its biased answers harmful, the rest helpful;
  `interp.studies.bbq.contrasts`).
- alignez-occupations: directions from the model's own pronoun leans on the train occupations
  (`interp.mitigate.alignez.lean_contrasts`: leaning the stereotyped way harmful).

    python benchmarks/persona_alignez.py            # ~25 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd  # noqa: E402
from edit_sites import measure  # noqa: E402
from mitigations import _markdown  # noqa: E402
from mitigations import fit as fit_baseline  # noqa: E402

import interp  # noqa: E402
from interp import capability as cap  # noqa: E402
from interp import prompts as P  # noqa: E402
from interp.common.io import atomic_path  # noqa: E402
from interp.mitigate.alignez import alignez, lean_contrasts  # noqa: E402
from interp.studies import bbq  # noqa: E402
from interp.studies import bbq_items as B  # noqa: E402

COLUMNS = {"test |log-odds|": "test occupations |log-odds|",
           "two_participants: |log-odds|": "two participants",
           "deep: |log-odds|": "deep", "object_possessive: |log-odds|": "object/possessive",
           "bias_ambig": "BBQ bias ambig", "bias_disambig": "BBQ bias disambig",
           "preference_ambig": "BBQ stereotype pref. ambig %",
           "accuracy_ambig": "BBQ acc ambig", "accuracy_disambig": "BBQ acc disambig",
           "PB_ambig": "PB ambig (persona mean)",
           "definitional acc": "definitional acc", "facts": "facts",
           "perplexity": "perplexity", "KL": "KL"}


def bbq_row(model, test, edit=None) -> dict:
    r = bbq.persona_bias(model, test, bbq.DEFAULT_PERSONAS, edit=edit, n_boot=200,
                         progress=False)
    s = r.scores()
    row = s.loc[bbq.BASELINE].to_dict()
    row["PB_ambig"] = float(s.drop(index=bbq.BASELINE).PB_ambig.mean())
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="Also write the table here (markdown).")
    ap.add_argument("--methods", default="lsdm,alignez-bbq,alignez-occupations")
    args = ap.parse_args()
    model = interp.load_model()
    reference = cap.next_token_logprobs(model)
    train, test = B.split("ours")
    print(f"BBQ items: {len(train)} train, {len(test)} held-apart "
          f"({test.question_index.nunique()} scenarios)", flush=True)
    edits, seconds = {}, {}
    for method in args.methods.split(","):
        t = time.perf_counter()
        if method == "lsdm":
            edits[method] = fit_baseline("lsdm", model, args)
        elif method == "alignez-bbq":
            seen = bbq.persona_bias(model, train[train.context_condition == "ambig"],
                                    bbq.DEFAULT_PERSONAS[:1], n_boot=10, progress=False)
            helpful, harmful = bbq.contrasts(seen)
            edits[method] = alignez(model, helpful, harmful, layers=[24], center=True,
                                    source="bbq train scenarios")
        elif method == "alignez-occupations":
            helpful, harmful = lean_contrasts(model, P.professions(model, "train"))
            edits[method] = alignez(model, helpful, harmful, layers=[24], center=True,
                                    source="train occupations")
        else:
            raise SystemExit(f"unknown method {method!r}")
        seconds[method] = time.perf_counter() - t
        print(f"{method}: fitted in {seconds[method]:.0f} s: {edits[method]!r}", flush=True)
    rows = {"unedited": {**measure(model, None), **bbq_row(model, test), "fit s": 0.0}}
    print("unedited measured", flush=True)
    for method, edit in edits.items():
        with edit.applied(model):
            row = measure(model, reference)
        rows[method] = {**row, **bbq_row(model, test, edit), "fit s": seconds[method]}
        print(f"{method} measured", flush=True)
    table = pd.DataFrame(rows).T[[*COLUMNS, "fit s"]].rename(columns=COLUMNS)
    with pd.option_context("display.width", 250, "display.max_columns", None,
                           "display.float_format", "{:.3f}".format):
        print(table)
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "w") as f:
            f.write(_markdown(table.astype(float).round(3)) + "\n")


if __name__ == "__main__":
    main()
