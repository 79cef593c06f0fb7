"""`debias`: fit the recipe validated for this model, at the sites it was validated at, and say
which one it ran and why.

No one recipe is best everywhere: the validation part of the held-out sentence shapes chooses
different recipes on different models (docs/mitigations-*.md). benchmarks/mitigations.py
measures the recipes on a validation part, writes its tables as data (benchmarks/results/),
chooses with `score` (fixed before any test number was seen) and, with --record, writes the choice and
the sites it measured them at to interp/data/validated.csv under the unedited model's name and
fingerprint. `debias` looks the model up there: by fingerprint (the very weights that were
measured), else by name (the same model loaded another way, e.g. in another dtype: said so),
else it runs "lsdm" at the sites a trace of the model chooses and says that nothing was
validated for this model.
"""

from __future__ import annotations

import csv
import datetime
import math
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path

from ..common.errors import InterpError
from ..common.io import atomic_path
from ..measure.contrast import other_than_gender
from .edit import Edit
from .finetune import finetune
from .lsdm import lsdm
from .recipes import RECIPES, check_recipe, fit_recipe, traced_sites
from .sites import Sites, find_sites

# benchmarks/mitigations.py's columns: (suite, metric) → column, direction first (50 / 0 =
# none), then size, then capability. The choosing rule reads them by these names.
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
# The allowances: points of accuracy (syntax, definitional, facts) and % of perplexity
# a debiased model may lose before the rule charges for it.
ALLOWED = {"syntax acc %": 2.0, "definitional %": 2.0, "facts %": 1.0, "perplexity": 2.0}
RULE = "direction + size + 10 x capability lost beyond the allowance (syntax counted)"


def score(row, base) -> float:
    """The choosing rule (lower is better), on a recipe's row and the unedited model's row of
    validation measures (mappings keyed by `COLUMNS`' names): the mean distance of the
    stereotype shares from 50 points, plus the mean remaining share of |log-odds| (×50, so that
    halving it is worth 25 points), plus 10 points per point of syntax (type-2 coreference),
    definitional or facts accuracy lost beyond the allowance (2, 2 and 1 points) and per % of
    perplexity beyond +2%."""
    direction = sum(abs(row[c] - 50) for c in SHARES) / len(SHARES)
    size = 50 * sum(row[c] / base[c] for c in SIZES) / len(SIZES)
    lost = sum(max(0.0, base[c] - row[c] - ALLOWED[c])
               for c in ("syntax acc %", "definitional %", "facts %"))
    lost += max(0.0, 100 * (row["perplexity"] / base["perplexity"] - 1) - ALLOWED["perplexity"])
    return float(direction + size + 10 * lost)


def read_table(path: str | Path, part: str = "validation"):
    """One part's table of the data benchmarks/mitigations.py wrote (a CSV with a `part` and a
    `method` column, then one column per measure), as a DataFrame of methods × measures (the
    measures this part has: the score is the validation part's)."""
    import pandas as pd

    frame = pd.read_csv(path)
    if part not in set(frame["part"]):
        raise ValueError(f"{path} has no {part!r} part")
    table = frame[frame["part"] == part].drop(columns="part").set_index("method")
    return table.rename_axis(None).dropna(axis=1, how="all")


@dataclass(frozen=True)
class Choice:
    """One model's validated recipe, as benchmarks/mitigations.py --record wrote it."""

    model: str
    fingerprint: str
    recipe: str
    score: float
    runner_up: str
    runner_up_score: float
    rule: str
    scored: str
    table: str
    mlp_layers: str = ""  # the sites the recipes were measured at, space-separated
    attn_layers: str = ""

    @property
    def sites(self) -> Sites | None:
        """The sites the recipe was validated at (None where the record has none)."""
        if not self.mlp_layers and not self.attn_layers:
            return None
        return Sites([int(l) for l in self.mlp_layers.split()],
                     [int(l) for l in self.attn_layers.split()],
                     f"{self.recipe} was validated at these sites on {self.model} ({self.table})")

    def says(self) -> str:
        return (f"{self.recipe}: chosen for {self.model} on the validation part of the held-out "
                f"sentence shapes (score {self.score:.1f}, runner-up {self.runner_up} "
                f"{self.runner_up_score:.1f}; rule: {self.rule}; {self.table}, "
                f"scored {self.scored})")


def _default_records() -> Path:
    return Path(str(resources.files("interp") / "data" / "validated.csv"))


def choices(path: str | Path | None = None) -> list[Choice]:
    """Every validated choice on record (interp/data/validated.csv unless `path`)."""
    path = Path(path) if path is not None else _default_records()
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [Choice(**{**r, "score": float(r["score"]),
                      "runner_up_score": float(r["runner_up_score"])}) for r in rows]


def record(choice: Choice, path: str | Path | None = None) -> Path:
    """Write `choice`, replacing the one for the same fingerprint (written atomically)."""
    path = Path(path) if path is not None else _default_records()
    kept = [c for c in choices(path) if c.fingerprint != choice.fingerprint] + [choice]
    names = [f.name for f in fields(Choice)]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=names, lineterminator="\n")
        w.writeheader()
        for c in sorted(kept, key=lambda c: (c.model, c.fingerprint)):
            w.writerow({**asdict(c), "score": f"{c.score:.2f}",
                        "runner_up_score": f"{c.runner_up_score:.2f}"})
    return path


def choose(scores: dict[str, float], *, model, table: str, sites: Sites) -> Choice:
    """The `Choice` of the lowest score among `RECIPES` in `scores` (recipe → score; other
    entries, such as "unedited" or a benchmark-only method, are not candidates), measured at
    `sites`."""
    ranked = sorted((s, r) for r, s in scores.items() if r in RECIPES and not math.isnan(s))
    if len(ranked) < 2:
        raise ValueError("choosing needs the scores of at least two recipes")
    (best, name), (second, runner) = ranked[:2]
    return Choice(model=model.name, fingerprint=model.fingerprint(), recipe=name, score=best,
                  runner_up=runner, runner_up_score=second, rule=RULE,
                  scored=datetime.date.today().isoformat(), table=table,
                  mlp_layers=" ".join(map(str, sites.mlp)),
                  attn_layers=" ".join(map(str, sites.attn)))


def lookup(model, path: str | Path | None = None) -> tuple[Choice | None, str]:
    """The validated choice for `model` and how it was matched ("fingerprint" or "name"), or
    (None, "")."""
    on_record = choices(path)
    fingerprint = model.fingerprint()
    for how, same in (("fingerprint", lambda c: c.fingerprint == fingerprint),
                      ("name", lambda c: c.model == model.name)):
        hits = [c for c in on_record if same(c)]
        if hits:
            return hits[0], how
    return None, ""


def recipe_sites(model, records: str | Path | None = None, *, seed: int = 0,
                 progress: bool | None = False) -> Sites:
    """Where `model`'s recipes edit: the sites its recorded choice was validated at, else the
    sites a trace of the model chooses."""
    choice, _ = lookup(model, records)
    if choice is not None and choice.sites is not None:
        return choice.sites
    return traced_sites(model, seed=seed, progress=progress)


# The recipes that take a contrast other than gender: LSDM and the two fine-tunes.
CONTRAST_RECIPES = ("auto", "lsdm", "ft", "cda")


def contrast_recipe(model, recipe: str, contrast, *, seed: int = 0,
                    progress: bool | None = None, **changes) -> Edit:
    """`debias` for a contrast other than gender: LSDM ("auto", "lsdm") or a fine-tune ("ft",
    "cda") on the contrast's train prompts, at the sites a trace of its lean chooses."""
    if recipe not in CONTRAST_RECIPES:
        raise InterpError(f"recipe {recipe!r} does not take a contrast; use one of "
                          f"{', '.join(CONTRAST_RECIPES)} for the contrast {contrast.name!r}")
    name = "lsdm" if recipe == "auto" else recipe
    if name == "lsdm":
        edit = lsdm(model, contrast=contrast, seed=seed, progress=progress, **changes)
    else:
        prompts = contrast.prompts(model, "train")
        sites, _ = find_sites(model, prompts, "last", seed=seed, progress=progress,
                              contrast=contrast)
        r = RECIPES[name]
        edit = finetune(model, prompts, layers=sites.mlp, attn_layers=sites.attn,
                        objective=r.method, contrast=contrast, seed=seed, progress=progress,
                        settings=r.settings.with_(**changes))
        edit.meta["sites_chosen"] = sites.why
    edit.meta["recipe"] = name
    edit.meta["recipe_does"] = RECIPES[name].does
    edit.meta["chosen"] = (
        f"{name}: asked for, on {contrast.name!r}'s train prompts" if recipe != "auto" else
        f"lsdm: recipes are validated on the gender contrast only, so for {contrast.name!r} "
        f"the least-squares edit at the sites a trace of its lean chooses "
        f"({edit.meta['sites_chosen']})")
    return edit


def debias(model, recipe: str = "auto", *, contrast=None, seed: int = 0,
           records: str | Path | None = None, progress: bool | None = None,
           **changes) -> Edit:
    """Fit the recipe validated for `model` (recipe="auto") or the one named (see
    `interp.mitigate.recipes.RECIPES`), on the train occupations, at the sites `recipe_sites`
    gives (the ones validated with the model's recorded recipe, else traced); the model is left as it was. changes: settings of the recipe's method (steps=...,
    lr=... for FT and CDA). The returned `Edit` says what ran and why: `meta["recipe"]`,
    `meta["recipe_does"]`, `meta["chosen"]` and `meta["sites_chosen"]`. records: another
    validated.csv to look the model up in.

    contrast: another bias than he/she (a `Contrast`, a built-in's name or a file). Recipes are
    validated on gender only (validated.csv), so for another contrast "auto" runs LSDM on the
    contrast's train prompts at the sites a trace of its lean chooses, and says so; "ft" and
    "cda" fine-tune the same weights on the same prompts with the contrast's loss
    (`interp.mitigate.finetune`)."""
    contrast = other_than_gender(contrast)
    if contrast is not None:
        return contrast_recipe(model, recipe, contrast, seed=seed, progress=progress, **changes)
    choice, how = lookup(model, records)
    if recipe == "auto":
        if choice is None:
            name = "lsdm"
            why = (f"lsdm: no recipe was validated for {model.name} (interp/data/validated.csv "
                   "has no entry for its fingerprint or name), so the one chosen on the bundled "
                   "model; benchmarks/mitigations.py --record chooses one for this model")
        else:
            name = choice.recipe
            why = choice.says() + ("" if how == "fingerprint" else
                                   f"; matched by name: these weights' fingerprint "
                                   f"{model.fingerprint()[:12]} is not the measured "
                                   f"{choice.fingerprint[:12]}")
    else:
        name = check_recipe(recipe)
        why = f"{name}: asked for"
    edit = fit_recipe(model, name, sites=None if choice is None else choice.sites, seed=seed,
                      progress=progress, **changes)
    edit.meta["recipe"] = name
    edit.meta["recipe_does"] = RECIPES[name].does
    edit.meta["chosen"] = why
    return edit
