"""Debiasing pipelines of the studies, as the `interp dpo` and `interp alignez` commands run
them: fit on the train side of a study's items, measure on the held-apart side before and
after.

- `story_dpo`: DPO on the model's own story-pair inconsistencies (chosen: the judgement both
  gender versions share; rejected: the one that departs), training the weights an LSDM edit
  would change; the mismatch rate on held-apart story pairs before and after.
- `persona_alignez`: AlignEZ directions from the model's own biased and unbiased answers on the
  train side of BBQ-format items; BBQ bias on the held-apart side before and after.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from ..common.frames import sample_rows
from ..measure import prompts as P
from ..mitigate.alignez import alignez
from ..mitigate.dpo import dpo
from ..mitigate.sites import Sites, find_sites
from . import bbq
from . import stories as S


@dataclass
class StoryDPO:
    """The DPO edit, the preference pairs it was trained on, the sites it trained and the
    held-apart story pairs judged before and after."""

    edit: object
    preferences: pd.DataFrame
    sites: Sites
    before: S.StoryConsistency
    after: S.StoryConsistency
    n_test: int

    def summary(self) -> str:
        return (f"held-apart story pairs ({self.n_test}): mismatch rate "
                f"{self.before.summary['mismatch_rate']:.3f} -> "
                f"{self.after.summary['mismatch_rate']:.3f}")


def story_dpo(model, train, test, *, preferences: pd.DataFrame | None = None, limit: int = 200,
              layers: Sequence[int] | None = None, attn_layers: Sequence[int] | None = None,
              seed: int = 0, progress: bool | None = None,
              log: Callable[[str], None] | None = None, **dpo_settings) -> StoryDPO:
    """DPO on story pairs. train, test: story-pair frames (`interp.studies.stories.resolve`
    and `split`). preferences: train on these pairs (prompt, chosen, rejected) instead of the
    train side's mismatches; limit: at most this many. layers: MLP layers to train (None: the
    sites a trace of the train occupations chooses, `interp.mitigate.sites`); attn_layers:
    attention output projections (None: the trace's, when it traced, else none).
    dpo_settings: `interp.dpo`'s (beta, epochs, lr, ...)."""
    say = log or (lambda text: None)
    if preferences is None:
        judged = S.story_consistency(model, train, seed=seed, progress=progress)
        preferences = S.preference_pairs(judged).iloc[:limit]
        say(f"{judged.summary['n_mismatches']} of {len(train)} train story pairs mismatch: "
            f"training on {len(preferences)} preference pairs")
    else:
        preferences = preferences.iloc[:limit]
    if layers is None:
        sites, _ = find_sites(model, P.professions(model, "train"), "last", seed=seed,
                              progress=progress)
        sites = sites._replace(attn=sites.attn if attn_layers is None else list(attn_layers))
        say(f"sites: {sites.text()}: {sites.why}")
    else:
        sites = Sites(list(layers), list(attn_layers or []), "given")
    edit = dpo(model, preferences, layers=sites.mlp, attn_layers=sites.attn, seed=seed,
               progress=progress, **dpo_settings)
    before = S.story_consistency(model, test, seed=seed, progress=progress)
    after = S.story_consistency(model, test, edit=edit, seed=seed, progress=progress)
    return StoryDPO(edit, preferences, sites, before, after, len(test))


@dataclass
class PersonaAlignEZ:
    """The representation edit and the held-apart items' persona bias before and after."""

    edit: object
    before: bbq.PersonaBias
    after: bbq.PersonaBias

    COLUMNS = ("accuracy_ambig", "bias_ambig", "bias_disambig", "PB_ambig")

    def summary(self) -> str:
        cols = list(self.COLUMNS)
        return ("held-apart items, before:\n" + self.before.scores()[cols].round(3).to_string()
                + "\nafter:\n" + self.after.scores()[cols].round(3).to_string())


def persona_alignez(model, train, test, personas: Sequence[str], *, layers: Sequence[int],
                    limit: int | None = None, seed: int = 0, progress: bool | None = None,
                    **alignez_settings) -> PersonaAlignEZ:
    """AlignEZ on BBQ-format items. train, test: item frames (`interp.studies.bbq_items.resolve`
    and `split`), each sampled to at most `limit` items; personas: the persona instructions
    answered under. alignez_settings: `interp.alignez`'s (site, k, alpha, beta, center)."""
    train, test = (sample_rows(f, limit, seed) for f in (train, test))
    seen = bbq.persona_bias(model, train, personas, seed=seed, progress=progress)
    helpful, harmful = bbq.contrasts(seen)
    edit = alignez(model, helpful, harmful, layers=layers, source="bbq train split",
                   **alignez_settings)
    before = bbq.persona_bias(model, test, personas, seed=seed, progress=progress)
    after = bbq.persona_bias(model, test, personas, edit=edit, seed=seed, progress=progress)
    return PersonaAlignEZ(edit, before, after)
