"""`run_suite`: a suite by name, loaded from a path and scored.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

from .crows_pairs import load_crows_pairs, score_crows_pairs
from .errors import SuiteError
from .result import SuiteResult
from .stereoset import load_stereoset, score_stereoset
from .winobias import load_winobias, score_winobias
from .winogender import load_winogender, score_winogender

SUITES: dict[str, tuple[Callable, Callable]] = {
    "winobias": (load_winobias, score_winobias),
    "winogender": (load_winogender, score_winogender),
    "crows_pairs": (load_crows_pairs, score_crows_pairs),
    "stereoset": (load_stereoset, score_stereoset),
}

_ALIASES = {"crows": "crows_pairs", "crowspairs": "crows_pairs", "wino_bias": "winobias",
            "wino_gender": "winogender", "stereo_set": "stereoset"}


def suite_key(name: str) -> str:
    """The canonical suite name: "CrowS-Pairs" -> "crows_pairs"."""
    key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
    key = _ALIASES.get(key, key)
    if key not in SUITES:
        raise SuiteError(f"unknown suite {name!r}; choose one of {sorted(SUITES)}")
    return key


def _keyword_names(fn: Callable) -> set[str]:
    return {p.name for p in inspect.signature(fn).parameters.values()
            if p.kind == inspect.Parameter.KEYWORD_ONLY}


def run_suite(model, name: str, path: str | Path, **kw) -> SuiteResult:
    """Load suite `name` ("winobias", "winogender", "crows_pairs", "stereoset") from `path` (a
    file, or a directory holding the standard file names) and score it. Keyword arguments go to
    the loader (e.g. bias_type="gender", split="test") or the scorer (e.g. span="shared",
    batch_size=32, n_boot=2000), whichever takes them."""
    key = suite_key(name)
    loader, scorer = SUITES[key]
    load_names, score_names = _keyword_names(loader), _keyword_names(scorer)
    unknown = sorted(set(kw) - load_names - score_names)
    if unknown:
        raise SuiteError(f"{key} takes no option(s) {unknown}; it takes "
                         f"{sorted(load_names | score_names)}")
    frame = loader(path, **{k: v for k, v in kw.items() if k in load_names})
    result = scorer(model, frame, **{k: v for k, v in kw.items() if k in score_names})
    result.meta["path"] = str(Path(path).expanduser().resolve())
    result.meta["load_options"] = {k: v for k, v in kw.items() if k in load_names}
    return result
