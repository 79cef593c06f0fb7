"""The debiasing recipes compared in benchmarks/mitigations.py, by name, so that `interp.debias`
runs exactly the recipe that was measured.

Every recipe is fitted on the train occupations only and changes the same weights, unless it says
otherwise: the MLP down projections of the top six layers and the attention output projections of
`recipe_sites` (26–27 on the bundled model, the demo's trace choice; the top layer on a model with
fewer layers). The sites are fixed rather than traced so that a comparison of recipes compares
recipes, not traces.
"""

from __future__ import annotations

from ..measure import prompts as P
from .edit import Edit, EditError
from .finetune import finetune
from .lsdm import EDIT_TEMPLATES, _preserved, lsdm

RECIPES = {
    "lsdm-templates": "LSDM at the last token fitted on the 18 subject-pronoun templates, the "
                      "train definitional words kept",
    "lsdm": "LSDM at the last token fitted on every context (subject, object and possessive "
            "pronoun slots), the train definitional words kept in the same contexts",
    "lsdm-strength": "lsdm asking for twice each occupation's own part of the balancing change",
    "lsdm-preserve": "lsdm with λ = 300 and the definitional prompts kept at weight 1",
    "lsdm-preserve-strength": "lsdm-preserve with strength 1.5",
    "lsdm-subject": "the paper's LSDM: keys at the subject's last token, bottom MLPs 0–4, its "
                    "three templates",
    "ft": "fine-tuning the same weights: squared he/she log-odds, KL to the unedited model",
    "cda": "fine-tuning the same weights with counterfactual data augmentation's loss (he and "
           "she equally likely targets), KL to the unedited model, the train definitional "
           "words kept",
    "ft-contexts": "ft fitted on every context, each prompt balanced on its own pronoun pair, "
                   "the train definitional words kept in the same contexts",
    "cda-contexts": "cda fitted on every context, each prompt on its own pronoun pair, the "
                    "train definitional words kept in the same contexts",
}


def recipe_sites(model) -> tuple[list[int], list[int]]:
    """(MLP layers, attention layers) every recipe but lsdm-subject edits: the top six MLPs, and
    attention 26–27 where the model has them (the bundled model's trace choice), else the top
    layer's."""
    top = model.arch.n_layers - 1
    mlp = list(range(max(0, top - 5), top + 1))
    attn = [l for l in (26, 27) if l <= top] or [top]
    return mlp, attn


def check_recipe(name: str) -> str:
    if name not in RECIPES:
        raise EditError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}")
    return name


def fit_recipe(model, name: str, *, steps: int = 150, lr: float = 1e-4, seed: int = 0,
               progress: bool | None = False) -> Edit:
    """Fit recipe `name` (see `RECIPES`) on `model`'s train occupations; the model is left as it
    was. steps and lr are FT's and CDA's optimiser settings."""
    check_recipe(name)
    mlp, attn = recipe_sites(model)
    kw = {"layers": mlp, "attn_layers": attn, "site": "last", "preserve_weight": 0.1,
          "n_prefixes": 0, "seed": seed, "progress": progress}
    if name == "lsdm-subject":
        return lsdm(model, P.professions(model, "train", templates=EDIT_TEMPLATES),
                    layers=list(range(min(5, model.arch.n_layers))), site="subject", seed=seed,
                    progress=progress)
    if name in ("lsdm-templates", "ft", "cda"):
        train, keep = P.professions(model, "train"), P.definitional(model, split="train")
        if name == "lsdm-templates":
            return lsdm(model, train, preserve=keep, **kw)
        return finetune(model, train, layers=mlp, attn_layers=attn,
                        objective="balance" if name == "ft" else "cda", preserve=keep,
                        steps=steps, lr=lr, seed=seed, progress=progress)
    contexts = P.contexts(model, "train")
    if name in ("ft-contexts", "cda-contexts"):
        # the train definitional words in the same contexts, as lsdm's preserve="auto" keeps them
        return finetune(model, contexts, layers=mlp, attn_layers=attn,
                        objective="balance" if name == "ft-contexts" else "cda",
                        preserve=_preserved(model, "auto", "last", contexts), steps=steps, lr=lr,
                        seed=seed, progress=progress)
    more = {"lsdm": {}, "lsdm-strength": {"strength": 2.0},
            "lsdm-preserve": {"lam": 300.0, "preserve_weight": 1.0},
            "lsdm-preserve-strength": {"strength": 1.5, "lam": 300.0, "preserve_weight": 1.0}}
    return lsdm(model, contexts, **{**kw, **more[name]})
