"""The debiasing recipes compared in benchmarks/mitigations.py, as one table, so that
`interp.debias` runs exactly the recipe that was measured.

A recipe is a method (LSDM, or fine-tuning with FT's or CDA's objective), the prompts it is
fitted on (always train occupations), what it keeps, and its settings (`LSDMSettings`,
`FTSettings`: their defaults unless the row says otherwise). Every recipe but the paper's
changes the same weights, the sites it is given: a model's recorded sites (the ones its
recipes were validated at, interp/data/validated.csv) so that a comparison of recipes compares
recipes, not traces; where none are recorded, the sites a trace of the model chooses
(`interp.mitigate.sites`). The paper's recipe edits the bottom MLPs at the subject.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..measure import prompts as P
from .edit import Edit, EditError
from .finetune import FTSettings, finetune
from .lsdm import EDIT_TEMPLATES, LSDMSettings, kept_prompts, lsdm, preserved_prompts
from .sites import SUBJECT_WIDTH, Sites, find_sites


@dataclass(frozen=True)
class Recipe:
    """One debiasing recipe. method: "lsdm", or "balance" / "cda" (the fine-tune's objective).
    prompts: "contexts" (every fitting context, each prompt on its own pronoun pair),
    "templates" (the subject-pronoun templates) or "paper" (the paper's three templates).
    keep: "contexts" (the train definitional words in the fitted contexts), "templates" (in
    the subject-pronoun templates) or None."""

    name: str
    does: str
    method: str
    prompts: str
    keep: str | None
    settings: LSDMSettings | FTSettings

    def fitting_prompts(self, model) -> P.PromptSet:
        if self.prompts == "contexts":
            return P.contexts(model, "train")
        templates = EDIT_TEMPLATES if self.prompts == "paper" else P.TEMPLATES
        return P.professions(model, "train", templates=templates)

    def kept(self, model, fitted: P.PromptSet, keep_declared: bool = False):
        """The prompts whose prediction the recipe keeps, with the he/she-declared ones
        (`declared_prompts`) where `keep_declared`."""
        if self.keep == "templates":
            return kept_prompts(model, P.definitional(model, split="train"), keep_declared)
        if self.keep == "contexts":  # as lsdm's preserve="auto" keeps them
            return preserved_prompts(model, "auto", "last", fitted, keep_declared)
        return None


_LSDM, _FT = LSDMSettings(), FTSettings()
RECIPES = {r.name: r for r in (
    Recipe("lsdm-templates", "LSDM at the last token fitted on the 18 subject-pronoun templates, "
           "the train definitional words kept", "lsdm", "templates", "templates", _LSDM),
    Recipe("lsdm", "LSDM at the last token fitted on every context (subject, object and "
           "possessive pronoun slots), the train definitional words kept in the same contexts",
           "lsdm", "contexts", "contexts", _LSDM),
    Recipe("lsdm-strength", "lsdm asking for twice each occupation's own part of the balancing "
           "change", "lsdm", "contexts", "contexts", _LSDM.with_(strength=2.0)),
    Recipe("lsdm-preserve", "lsdm with λ = 300 and the definitional prompts kept at weight 1",
           "lsdm", "contexts", "contexts", _LSDM.with_(lam=300.0, preserve_weight=1.0)),
    Recipe("lsdm-preserve-strength", "lsdm-preserve with strength 1.5", "lsdm", "contexts",
           "contexts", _LSDM.with_(strength=1.5, lam=300.0, preserve_weight=1.0)),
    Recipe("lsdm-subject", "the paper's LSDM: keys at the subject's last token, the bottom "
           f"{SUBJECT_WIDTH} MLPs, its three templates", "lsdm", "paper", None,
           _LSDM.with_(site="subject")),
    Recipe("ft", "fine-tuning the same weights: squared he/she log-odds, KL to the unedited "
           "model", "balance", "templates", "templates", _FT),
    Recipe("cda", "fine-tuning the same weights with counterfactual data augmentation's loss "
           "(he and she equally likely targets), KL to the unedited model, the train "
           "definitional words kept", "cda", "templates", "templates", _FT),
    Recipe("ft-contexts", "ft fitted on every context, each prompt balanced on its own pronoun "
           "pair, the train definitional words kept in the same contexts", "balance",
           "contexts", "contexts", _FT),
    Recipe("cda-contexts", "cda fitted on every context, each prompt on its own pronoun pair, "
           "the train definitional words kept in the same contexts", "cda", "contexts",
           "contexts", _FT),
)}


def check_recipe(name: str) -> str:
    if name not in RECIPES:
        raise EditError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}")
    return name


def traced_sites(model, *, seed: int = 0, progress: bool | None = False) -> Sites:
    """The sites a trace of the train occupations chooses for a last-token recipe."""
    return find_sites(model, P.professions(model, "train"), "last", seed=seed,
                      progress=progress)[0]


def fit_recipe(model, name: str, *, sites: Sites | None = None, seed: int = 0,
               progress: bool | None = False, **changes) -> Edit:
    """Fit recipe `name` (see `RECIPES`) on `model`'s train occupations at `sites` (None: the
    sites a trace chooses, `traced_sites`); the model is left as it was. changes: settings of
    the recipe's method to override (steps=..., lr=... for FT and CDA; lam=... for LSDM)."""
    recipe = RECIPES[check_recipe(name)]
    settings = recipe.settings.with_(**changes)
    fitted = recipe.fitting_prompts(model)
    if recipe.prompts == "paper":  # the paper's sites: the bottom MLPs, at the subject
        return lsdm(model, fitted, layers=list(range(min(SUBJECT_WIDTH, model.arch.n_layers))),
                    seed=seed, progress=progress, settings=settings)
    sites = sites or traced_sites(model, seed=seed, progress=progress)
    keep = recipe.kept(model, fitted, settings.keep_declared)
    if recipe.method == "lsdm":
        edit = lsdm(model, fitted, layers=sites.mlp, attn_layers=sites.attn, preserve=keep,
                    seed=seed, progress=progress, settings=settings)
    else:
        edit = finetune(model, fitted, layers=sites.mlp, attn_layers=sites.attn,
                        objective=recipe.method, preserve=keep, seed=seed, progress=progress,
                        settings=settings)
    edit.meta["sites_chosen"] = sites.why
    return edit
