"""Is there a direction that carries an occupation's gender stereotype but not definitional gender?

An edit that removes the stereotype and keeps "The king said that" → he needs one. At the
subject's last token ("nurse" in "The nurse said that"), in the stream after each layer, a
ridge probe is fitted to the train occupations' stereotype scores and read on what it never saw:

- the test occupations: r with their stereotype scores (how much of the stereotype it reads);
- the held-out definitional words: r with their gender (how much definitional gender it reads).

Three probes per layer: fitted on the occupations alone; also held at 0 on the train
definitional words ("constrained"); also held at 0 on the gender terms of
interp/data/gender_terms.csv (pronouns, kinship and title words), the held-out definitional
words left out ("+ terms"). A direction that separates the two reads the test occupations and
not the held-out definitional words.

--erase L: the "+ terms" probe's direction at the stream entering block L is erased about the
occupations' mean, at every position (`interp.mitigate.project.Steering`, an orthogonal
projection), and the test occupations' bias, definitional accuracy and facts are measured
against the unedited model: does the model use the direction the probe reads?

    python benchmarks/stereotype_direction.py
    python benchmarks/stereotype_direction.py --model gemma-3-270m --erase 12,15
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import interp  # noqa: E402
from interp import prompts as P  # noqa: E402
from interp.common.io import atomic_path  # noqa: E402
from interp.measure.evaluate import evaluate  # noqa: E402
from interp.mitigate.keys import SubjectReader, versions  # noqa: E402
from interp.mitigate.project import Steering  # noqa: E402
from interp.report import markdown_table  # noqa: E402
from interp.studies.corpus import gender_terms  # noqa: E402

TEMPLATE = ["The {} said that"]  # the subject's last token reads only "The <subject>"
PROBES = ("occupations only", "constrained", "+ terms")


def subject_stream(model, prompts, hooks: list[str]) -> dict[str, torch.Tensor]:
    """{hook: (n_subjects, d_model) float64} at each subject's last token."""
    reader = SubjectReader(model, versions(model, prompts, [], "subject"))
    return reader.read(hooks)


def probe(X: torch.Tensor, y: torch.Tensor, held: torch.Tensor | None = None,
          weight: float = 10.0, ridge: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, μ): ridge regression of y on X − μ (μ: X's mean), with the rows of `held` asked to
    read 0 at `weight` times a row's weight; the ridge is `ridge` × the total variance."""
    mean = X.mean(0)
    rows, targets = X - mean, y - y.mean()
    w8 = torch.ones(len(X), dtype=X.dtype)
    if held is not None and len(held):
        rows = torch.cat([rows, held - mean])
        targets = torch.cat([targets, torch.zeros(len(held), dtype=X.dtype)])
        w8 = torch.cat([w8, weight * torch.ones(len(held), dtype=X.dtype)])
    A = (rows * w8[:, None]).T @ rows
    A += ridge * rows.var(0).sum() * torch.eye(X.shape[1], dtype=X.dtype)
    return torch.linalg.solve(A, (rows * w8[:, None]).T @ targets), mean


def _r(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.numpy(), b.numpy())[0, 1])


def sets(model):
    """The probe's prompt sets: train and test occupations, train and held-out definitional
    words, and the gender terms that are neither held-out definitional nor already train."""
    sets_ = {"occupations": P.professions(model, "train", templates=TEMPLATE),
             "test occupations": P.professions(model, "test", templates=TEMPLATE),
             "definitional": P.definitional(model, split="train", templates=TEMPLATE),
             "held-out definitional": P.definitional(model, split="test", templates=TEMPLATE)}
    taken = set(sets_["definitional"].subjects()) | set(sets_["held-out definitional"].subjects())
    sets_["terms"] = P.from_templates(model, TEMPLATE,
                                      [w for w in gender_terms() if w not in taken])
    return sets_


def scores(ps, key: str) -> torch.Tensor:
    return torch.tensor([getattr(p, key) for p in ps], dtype=torch.float64)


def probe_table(model, layers) -> tuple[pd.DataFrame, dict]:
    """Per layer and probe: r on the test occupations and on the held-out definitional words.
    Also returns {layer: (w, μ)} of the "+ terms" probe at the stream entering that layer."""
    data = sets(model)
    hooks = {l: model.arch.hook("resid", l) for l in layers}
    acts = {k: subject_stream(model, ps, list(hooks.values())) for k, ps in data.items()}
    y = scores(data["occupations"], "stereotypical")
    y_test = scores(data["test occupations"], "stereotypical")
    d_test = scores(data["held-out definitional"], "definitional")
    rows, directions = [], {}
    for l, hook in hooks.items():
        a = {k: v[hook] for k, v in acts.items()}
        held = {PROBES[0]: None, PROBES[1]: a["definitional"],
                PROBES[2]: torch.cat([a["definitional"], a["terms"]])}
        for name, h in held.items():
            w, mean = probe(a["occupations"], y, h)
            rows.append({"layer": l, "probe": name,
                         "r test occupations": _r(a["test occupations"] @ w, y_test),
                         "r held-out definitional": _r(a["held-out definitional"] @ w, d_test)})
            if name == PROBES[-1]:
                directions[l] = (w, mean)
    return pd.DataFrame(rows), directions


ERASE_ROWS = {("occupations", "abs_logodds"): "test occ. |lo|",
              ("occupations", "bls_correlation"): "test occ. r(BLS)",
              ("occupations", "stereotype_following"): "test occ. follows %",
              ("definitional", "accuracy"): "definitional %",
              ("facts", "accuracy"): "facts %"}


def erase_table(model, directions: dict, layers) -> pd.DataFrame:
    """The unedited model's bias and capability, and the same with each layer's direction
    erased at the stream entering it (at every position)."""
    def measure():
        report = evaluate(model, ("occupations", "definitional", "facts"), n_boot=200,
                          progress=False)
        out = {}
        for key, name in ERASE_ROWS.items():
            v = float(report.row(*key).value)
            out[name] = 100 * v if name in ("definitional %", "facts %") else v
        return out

    rows = {"unedited": measure()}
    for l in layers:
        w, mean = directions[l]
        c = (w / w.norm()).float()
        with Steering(l, c, c, mean.float(), 1.0, {"method": "erase probe"}).applied(model):
            rows[f"erased at {l}"] = measure()
    return pd.DataFrame(rows).T


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--erase", default="", help="Comma list of layers to erase the direction at.")
    ap.add_argument("--out", default=None, help="Also write the tables here (markdown).")
    args = ap.parse_args()
    model = interp.load_model(args.model) if args.model else interp.load_model()
    n = model.arch.n_layers
    erase = [int(l) for l in args.erase.split(",") if l]
    for l in erase:
        model.arch.check_layer(l)
    layers = sorted(set(range(0, n, 3)) | set(erase))
    table, directions = probe_table(model, layers)
    wide = table.pivot(index="layer", columns="probe").round(2)[
        [(r, p) for r in ("r test occupations", "r held-out definitional") for p in PROBES]]
    wide.columns = [f"{r.removeprefix('r ')}: {p}" for r, p in wide.columns]
    text = [f"# Stereotype and definitional gender directions on {model.name}", "",
            "r of a ridge probe fitted to the train occupations' stereotype scores at the "
            "subject's last token (stream entering the layer), read on the test occupations "
            "and on the held-out definitional words.", "",
            markdown_table(wide.reset_index()), ""]
    print(wide.to_string())
    if erase:
        erased = erase_table(model, directions, erase).round(3)
        print(erased.to_string())
        text += ["Erasing the '+ terms' direction at every position:", "",
                 markdown_table(erased.reset_index(names="model")), ""]
    if args.out:
        with atomic_path(args.out) as tmp, open(tmp, "w") as f:
            f.write("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
