"""`capability()`: several suites at once into a `CapabilityReport`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...common.errors import InterpError
from .gender import definitional
from .heldout import kl_divergence, perplexity
from .recall import factual_recall
from .result import CapabilityReport, model_meta

SUITES = ("facts", "perplexity", "definitional", "kl")

DEFAULT_SUITES = ("facts", "perplexity", "definitional")


def capability(model, suites: Sequence[str] = DEFAULT_SUITES, reference=None, *,
               text: str | None = None, batch_size: int = 8, n_boot: int = 1000,
               seed: int = 0) -> CapabilityReport:
    """Run the named suites; KL is added when a `reference` (a `NextTokenLogprobs` or a model)
    is given. `report.table()` has one row per suite. text: the held-out text for perplexity and
    KL (default interp/data/heldout.txt; a stored reference must have been taken on it).
    batch_size: windows per forward for the text suites (the prompt suites use 64)."""
    suites = list(suites)
    if reference is not None and "kl" not in suites:
        suites.append("kl")
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise InterpError(f"unknown capability suite(s) {unknown}; choose from {list(SUITES)}")
    if "kl" in suites and reference is None:
        raise InterpError("the kl suite needs a reference: next_token_logprobs(model) taken "
                          "before the edit, or the unedited model")
    boot = {"n_boot": n_boot, "seed": seed}
    run = {"facts": lambda: factual_recall(model, **boot),
           "perplexity": lambda: perplexity(model, text, batch_size=batch_size, **boot),
           "definitional": lambda: definitional(model, **boot),
           "kl": lambda: kl_divergence(model, reference, text, batch_size=batch_size,
                                       **boot)}
    return CapabilityReport([run[s]() for s in suites], model_meta(model))
