"""Where an edit goes, read from a trace: the one place every entry point (`lsdm`, the recipes
on a model with no validated sites, the edit and dpo commands, the demo) chooses its layers.

A last-token edit ("last") changes the top `MLP_WIDTH` MLPs and the `N_ATTN` attention layers
among them with the strongest effect at the prompt's last token: there the pronoun is
predicted, and the top band edits better than the trace's own MLP peak at that token
(docs/editing.md, benchmarks/edit_sites.py). The paper's edit ("subject") changes the band of
`SUBJECT_WIDTH` MLPs with the strongest effect at the subject's last token.
"""

from __future__ import annotations

from typing import NamedTuple

from ..locate.trace import trace
from ..measure.prompts import PromptSet, pick
from .keys import SITE_TOKEN, check_site

# Prompts traced when a trace is made only to choose sites (a seeded sample of the fitted
# prompts whose pronoun is the subject's), and the noise samples per prompt.
SITE_PROMPTS = 40
SITE_SAMPLES = 3
MLP_WIDTH = 6
N_ATTN = 2
SUBJECT_WIDTH = 5


class Sites(NamedTuple):
    """The layers an edit changes: MLP layers, attention layers (output projections) and why."""

    mlp: list[int]
    attn: list[int]
    why: str

    def text(self) -> str:
        return f"MLP {self.mlp}, attention {self.attn}"


def locate_sites(located, site: str = "last") -> Sites:
    """The edit's sites read from a trace (`TraceResult`): for site "last" the top `MLP_WIDTH`
    MLP layers and the `N_ATTN` attention layers among them strongest at the last token (the
    trace needs MLP and attention cells); for "subject" the trace's band of MLP layers at the
    subject's last token."""
    check_site(site)
    if site == "subject":
        layers = located.suggest_layers("mlp", width=SUBJECT_WIDTH, group=SITE_TOKEN[site])
        return Sites(layers, [], "the paper's LSDM: the band of MLP layers with the strongest "
                                 "effect at the subject's last token in the trace")
    n = int(located.frame["layer"].max()) + 1
    mlp = list(range(max(0, n - MLP_WIDTH), n))
    profile = located.layer_profile("attn", SITE_TOKEN[site])
    attn = sorted(int(l) for l in profile[profile.index.isin(mlp)].nlargest(N_ATTN).index)
    why = ("the pronoun is predicted at the prompt's last token, where the top MLPs edit best, "
           "and these are the attention layers among them with the strongest effect there in "
           "the trace (" + ", ".join(f"{l}: {profile[l]:.3f}" for l in attn) + ")")
    return Sites(mlp, attn, why)


def trace_for_sites(model, prompts: PromptSet, site: str = "last", *, seed: int = 0,
                    progress: bool | None = None, contrast=None):
    """The trace `locate_sites` reads: `SITE_PROMPTS` of `prompts` (a seeded sample; of those
    whose pronoun is the subject's, for he/she), noise on the subject (a contrast's traced
    span), MLP (and, for a last-token edit, attention) cells; the metric is the contrast's
    lean when one is given."""
    check_site(site)
    kinds = ("mlp", "attn") if site == "last" else ("mlp",)
    pool = prompts.of_slot("subject") if contrast is None else prompts
    return trace(model, pick(pool, SITE_PROMPTS, seed), contrast=contrast, kinds=kinds,
                 samples=SITE_SAMPLES, seed=seed, progress=progress)


def find_sites(model, prompts: PromptSet, site: str = "last", *, seed: int = 0,
               progress: bool | None = None, contrast=None) -> tuple[Sites, object]:
    """Trace `prompts` (`trace_for_sites`) and read the sites (`locate_sites`); returns the
    sites and the trace, which `verify` can re-run on the edited model."""
    located = trace_for_sites(model, prompts, site, seed=seed, progress=progress,
                              contrast=contrast)
    return locate_sites(located, site), located
