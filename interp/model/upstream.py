"""What `interp` relies on from the libraries under it, in one place.

transformers and TransformerLens change between minor releases (transformers 5.24 renamed the
forward's `past_key_values` argument to `cache`; TransformerLens 4.3's attention wrappers still
read only the old name). The few behaviours we depend on beyond their documented APIs are
pinned by `tests/test_upstream.py`, whose failures name the package and version; this module
holds the shims those tests check and the version report of `interp info`.
"""

from __future__ import annotations

import functools
import inspect
from importlib import metadata
from pathlib import Path

# The libraries whose behaviour the results depend on, in the order `interp info` shows them.
WATCHED = ("torch", "transformers", "transformer-lens", "gguf", "numpy")


class UpstreamChangeError(RuntimeError):
    """An installed library no longer behaves as this version of interp was tested with."""


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def versions() -> str:
    """'transformers 5.24.0, transformer-lens 4.3.0, torch 2.13.0+cpu': for error messages."""
    return ", ".join(f"{p} {version(p) or 'missing'}" for p in ("transformers", "transformer-lens",
                                                               "torch"))


def declared_ranges() -> dict[str, str]:
    """The version ranges this installed `interp` declares for its dependencies (its metadata):
    their bounds are the lowest and newest versions the test suite has passed on."""
    from packaging.requirements import Requirement

    out = {}
    for line in metadata.requires("interp") or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out[req.name.lower()] = str(req.specifier)
    return out


def locked_versions() -> dict[str, str]:
    """The versions of requirements.lock, what CI tests, when this is a source checkout."""
    lock = Path(__file__).resolve().parents[2] / "requirements.lock"
    if not lock.is_file():
        return {}
    pins = (line.split("==") for line in lock.read_text().splitlines() if "==" in line)
    return {name.strip().lower(): v.split(";")[0].strip() for name, v in pins}


def version_report() -> list[tuple[str, str, str, str, bool]]:
    """(package, installed version, locked version, declared range, installed is inside the
    range) for each watched package."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    ranges, locked = declared_ranges(), locked_versions()
    rows = []
    for p in WATCHED:
        v, spec = version(p), ranges.get(p, "")
        ok = v is not None and (not spec or SpecifierSet(spec).contains(Version(v),
                                                                        prereleases=True))
        nice = ",".join(sorted(spec.split(","), key=lambda s: not s.startswith(">"))) if spec \
            else "any"
        rows.append((p, v or "not installed", locked.get(p, "-"), nice, ok))
    return rows


@functools.lru_cache(maxsize=None)
def _cache_argument(forward) -> str:
    params = inspect.signature(forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@functools.lru_cache(maxsize=None)
def _passes_layer_past(forward) -> bool:
    """Whether a body's forward hands its cache to the layers as `layer_past` itself
    (GPT-NeoX does; most bodies pass it as `cache`)."""
    try:
        return "layer_past=" in inspect.getsource(forward)
    except (OSError, TypeError):
        return False


def cache_kwargs(body, cache) -> dict:
    """Keyword arguments that hand `cache` to a forward of the HF body `body`.

    transformers ≥ 5.24 takes the cache as `cache` (earlier: `past_key_values`) and passes it on
    to each layer under that name, but TransformerLens 4.3's attention wrappers read it only as
    `past_key_values` or `layer_past`: given `cache` alone they skip the cache silently, and
    resumed forwards see no earlier tokens. So the cache also goes in as `layer_past`, which
    transformers' layers pass through to the attention untouched, unless the body already
    passes it under that name (GPT-NeoX) (pinned by tests/test_upstream.py)."""
    forward = type(body).forward
    kw = {_cache_argument(forward): cache}
    if not _passes_layer_past(forward):
        kw["layer_past"] = cache
    return kw


def check_cache_filled(cache, layer: int, expected: int) -> None:
    """Raise if a forward that was handed `cache` did not write its keys and values there."""
    got = cache.get_seq_length(layer)
    if got != expected:
        raise UpstreamChangeError(
            f"the KV cache holds {got} positions at layer {layer} after a forward that should "
            f"leave {expected} there: {versions()} changed how keys and values reach the "
            "cache. Install the tested versions (`make install` uses the lock file) and see "
            "`interp info`.")
