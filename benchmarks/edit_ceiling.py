"""Edit ceiling: how much of the unseen occupations' bias an edit at the subject can remove at all.

An LSDM edit changes what the MLPs write at the subject's last token, as a function of that token's
key. Two bounds on what it can do for occupations it was not fitted on, measured on the bundled
model (or --model):

1. Structure of the bias. Mean |log-odds| over test occupations × templates, and what is left
   after removing each occupation's own mean over templates (the most any change at the subject
   can do if it shifts the log-odds of a subject's prompts alike), and after also removing each
   template's mean over occupations (a change at the last token could reach that part).
2. Linear reach. An edit's effect on a new subject is linear in its key (ΔW k). A ridge
   regression from keys at a layer to the subject's mean log-odds, fitted on train occupations,
   predicts the test occupations' means: its R² bounds the share of their subject effect any
   linear-in-key edit at that layer can cancel.

    python benchmarks/edit_ceiling.py                       # layers 0, 2, 4, 8, 12
    python benchmarks/edit_ceiling.py --layers 0,1,2,3,4 --penalties 10,1000
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import interp  # noqa: E402
from interp import prompts as P  # noqa: E402
from interp.mitigate.keys import SubjectReader, versions  # noqa: E402


def logodds_table(model, split: str) -> pd.DataFrame:
    """(subjects × templates) log p(she) − log p(he) over every template."""
    frame = interp.bias(model, P.professions(model, split, templates=P.TEMPLATES),
                        progress=False).frame
    return frame.pivot_table(index="subject", columns="template", values="logodds")


def structure(x: pd.DataFrame) -> dict:
    a = x.to_numpy()
    subj, tmpl = a.mean(1, keepdims=True), a.mean(0, keepdims=True)
    return {"as measured": np.abs(a).mean(), "minus subject means": np.abs(a - subj).mean(),
            "minus template means": np.abs(a - tmpl).mean(),
            "minus both": np.abs(a - subj - tmpl + a.mean()).mean()}


def keys(model, split: str, layers) -> tuple[list[str], dict[int, np.ndarray]]:
    """Keys at the subject's last token per layer, averaged over the edit templates' contexts."""
    v = versions(model, P.professions(model, split, templates=interp.EDIT_TEMPLATES), [])
    names = {l: model.arch.hook("mlp_key", l) for l in layers}
    got = SubjectReader(model, v).read(list(names.values()), stop=max(layers) + 1)
    return v.subjects, {l: got[n].numpy() for l, n in names.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--layers", default="0,2,4,8,12")
    ap.add_argument("--penalties", default="10,100,1000")
    args = ap.parse_args()
    model = interp.load_model(args.model) if args.model else interp.load_model()
    layers = [int(x) for x in args.layers.split(",")]
    train, test = logodds_table(model, "train"), logodds_table(model, "test")
    rows = structure(test)
    base = rows["as measured"]
    print(f"{model!r}\n{len(test)} test occupations × {test.shape[1]} templates\n")
    print("mean |log-odds| of the test occupations")
    for k, val in rows.items():
        print(f"  {k:<24}{val:7.3f}  ({100 * (val / base - 1):+.0f}%)")

    (s_tr, k_tr), (s_te, k_te) = keys(model, "train", layers), keys(model, "test", layers)
    y_tr, y_te = train.mean(axis=1).loc[s_tr].to_numpy(), test.mean(axis=1).loc[s_te].to_numpy()
    a_te = test.loc[s_te].to_numpy()
    print("\nridge from keys to the subject's mean log-odds (train → test)")
    print(f"  {'layer':<7}{'penalty':>8}{'R²':>7}{'test |log-odds| after cancelling':>36}")
    for layer in layers:
        mu, sd = k_tr[layer].mean(0), k_tr[layer].std(0) + 1e-6
        A, B = (k_tr[layer] - mu) / sd, (k_te[layer] - mu) / sd
        for pen in (float(p) for p in args.penalties.split(",")):
            w = np.linalg.solve(A.T @ A + pen * np.eye(A.shape[1]), A.T @ (y_tr - y_tr.mean()))
            pred = B @ w + y_tr.mean()
            r2 = 1 - ((y_te - pred) ** 2).sum() / ((y_te - y_te.mean()) ** 2).sum()
            left = np.abs(a_te - pred[:, None]).mean()
            print(f"  {layer:<7}{pen:>8g}{r2:>7.2f}{left:>26.3f} ({100 * (left / base - 1):+.0f}%)")


if __name__ == "__main__":
    main()
