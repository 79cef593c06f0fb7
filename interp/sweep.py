"""Sweeps: a grid of causal traces and LSDM edits from one TOML file, resumable cell by cell.

    result = run_sweep("configs/sweep_example.toml")     # or a dict; out_dir= overrides `out`
    result.frame                                          # one row per cell: parameters, metrics
    print(result.summary())
    SweepResult.load("runs/sweep-example")

The grid is the Cartesian product of the listed values: traces = prompt sets × corruptions ×
kinds × windows, edits = layers × λ. Every cell has a stable id (a short hash of everything that
determines its result) and a directory `out/cells/<id>/` holding its artefacts and, written last
and atomically, `done.json` (its parameters and summary metrics). A rerun skips cells with a
valid done.json and recomputes the others, so a sweep killed at any point resumes where it
stopped. `out/results.csv` is rebuilt from the done.json files after every cell.

The numbers before any edit (bias on the eval sets, definitional accuracy, facts, perplexity)
are computed once per sweep and cached in `out/baseline.json`.
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import itertools
import json
import re
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .errors import InterpError
from .io import atomic_write

CORRUPTIONS = ("noise", "swap")
METRICS = ("logodds", "gap", "abs_gap", "p_male", "p_female")
SOURCES = ("professions", "definitional", "jsonl")
SPLITS = ("train", "test", "all")
EDIT_SUITES = ("facts", "perplexity", "definitional", "kl")
BUNDLED_ALIASES = ("bundled", "smollm2-135m-instruct")

TOP_KEYS = {"model", "out", "seed", "prompts", "trace", "edit"}
PROMPT_KEYS = {"source", "split", "templates", "subjects", "limit", "path"}
TRACE_KEYS = {"prompts", "corruptions", "kinds", "windows", "samples", "metric", "method",
              "swap_words"}
EDIT_KEYS = {"prompts", "eval", "layers", "lam", "suites", "definitional", "heldout_tokens"}
# lsdm arguments a sweep sets itself: from the grid, the top-level seed, or the run.
EDIT_RESERVED = {"model", "prompts", "layers", "lam", "seed", "progress"}

NAME = re.compile(r"^[A-Za-z0-9_-]+$")
INT_COLUMNS = {"window", "samples", "top_layer", "mlp_peak_layer", "attn_peak_layer",
               "n_prompts", "n_skipped"}


class SweepConfigError(InterpError):
    """A sweep configuration that cannot be run as written."""


# ---------------------------------------------------------------------------------------------
# Reading and checking the configuration


@dataclass
class SweepConfig:
    """A checked configuration: model spec, prompt-set specs, trace and edit grids."""

    model: str | None  # what interp.load_model gets (None: the bundled model)
    out: str | None
    seed: int
    prompts: dict[str, dict]
    trace: dict | None
    edit: dict | None
    raw: dict = field(repr=False)
    text: str | None = field(default=None, repr=False)  # the TOML as written, when from a file

    @property
    def model_name(self) -> str:
        """The name load_model gives the model (the bundled one under its own name)."""
        from .models import BUNDLED_NAME

        return BUNDLED_NAME if self.model is None else self.model


def _load_toml(path: Path) -> tuple[dict, str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: the same parser, as a package
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise SweepConfigError("reading a TOML sweep config on Python 3.10 needs tomli: "
                                   "pip install tomli") from None
    if not path.is_file():
        raise SweepConfigError(f"no sweep config at {path}")
    text = path.read_text()
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise SweepConfigError(f"{path} is not valid TOML: {e}") from None


def read_config(config) -> SweepConfig:
    """A `SweepConfig` from a TOML path, a dict, or a `SweepConfig`; every key is checked."""
    if isinstance(config, SweepConfig):
        return config
    text = None
    if isinstance(config, (str, Path)):
        raw, text = _load_toml(Path(config))
    elif isinstance(config, dict):
        raw = config
    else:
        raise SweepConfigError(f"a sweep config is a TOML path or a dict, not "
                               f"{type(config).__name__}")
    _no_unknown(raw, TOP_KEYS, "the top level")
    model = _opt(raw, "model", str, "model", "a model spec such as 'bundled' or 'tiny-llama'")
    if model is not None and model.lower() in BUNDLED_ALIASES:
        model = None
    prompts = _prompt_sets(_table(raw, "prompts", "prompts"))
    if "trace" not in raw and "edit" not in raw:
        raise SweepConfigError("nothing to run: add a [trace] table, an [edit] table, or both")
    trace = _trace_section(_table(raw, "trace", "trace"), prompts) if "trace" in raw else None
    edit = _edit_section(_table(raw, "edit", "edit"), prompts) if "edit" in raw else None
    return SweepConfig(
        model=model,
        out=_opt(raw, "out", str, "out", "a directory path"),
        seed=_opt(raw, "seed", int, "seed", "an integer", default=0),
        prompts=prompts, trace=trace, edit=edit, raw=raw, text=text,
    )


# -- small checkers: each names the key and says what it expects ------------------------------


def _type_name(value) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _is(value, kind) -> bool:
    if kind is int:  # TOML booleans are ints to Python; a seed of `true` is a mistake
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _bad(where: str, expected: str, value) -> SweepConfigError:
    return SweepConfigError(f"sweep config: {where} must be {expected}, not {value!r} "
                            f"({_type_name(value)})")


def _opt(table: dict, key: str, kind, where: str, expected: str, default=None):
    if key not in table:
        return default
    value = table[key]
    if not _is(value, kind):
        raise _bad(where, expected, value)
    return float(value) if kind is float else value


def _table(raw: dict, key: str, where: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise _bad(where, f"a table ([{where}])", value)
    return value


def _no_unknown(table: dict, allowed: set, where: str, hint: str = "") -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SweepConfigError(f"sweep config: unknown key(s) {unknown} in {where}; allowed: "
                               f"{', '.join(sorted(allowed))}{hint}")


def _axis(table: dict, key: str, kind, where: str, expected: str, default=None) -> list:
    """A grid axis: a non-empty list of values (a single value is a list of one)."""
    if key not in table:
        if default is None:
            raise SweepConfigError(f"sweep config: {where} is missing; it must be a list of "
                                   f"{expected}")
        return list(default)
    values = table[key]
    if not isinstance(values, list):
        values = [values]
    if not values:
        raise SweepConfigError(f"sweep config: {where} is empty, so the grid would have no "
                               f"cells; give at least one of {expected}")
    for v in values:
        if not _is(v, kind):
            raise _bad(f"every entry of {where}", expected, v)
    return [float(v) if kind is float else v for v in values]


def _nested_axis(table: dict, key: str, kind, where: str, example: str, default=None) -> list:
    """An axis whose values are lists themselves (kinds, layers). A flat list is refused: it
    could mean one combination or one cell per entry."""
    if key not in table:
        if default is None:
            raise SweepConfigError(f"sweep config: {where} is missing; e.g. {key} = {example}")
        return [list(d) for d in default]
    values = table[key]
    if not isinstance(values, list) or not all(isinstance(v, list) for v in values):
        raise SweepConfigError(f"sweep config: {where} must be a list of lists (one per cell), "
                               f"e.g. {key} = {example}; got {values!r}")
    if not values or not all(values):
        raise SweepConfigError(f"sweep config: {where} has an empty list, so the grid would "
                               f"have no cells; e.g. {key} = {example}")
    for combo in values:
        for v in combo:
            if not _is(v, kind):
                raise _bad(f"every entry of {where}", _type_name(kind()), v)
    return values


def _choice(value, allowed, where: str):
    if value not in allowed:
        raise SweepConfigError(f"sweep config: {where} is {value!r}; use one of "
                               f"{', '.join(map(str, allowed))}")
    return value


def _known_set(name: str, prompts: dict, where: str) -> str:
    if name not in prompts:
        defined = ", ".join(prompts) or "none"
        raise SweepConfigError(f"sweep config: {where} names the prompt set {name!r}, which is "
                               f"not defined: add a [prompts.{name}] table (defined: {defined})")
    return name


# -- sections ---------------------------------------------------------------------------------


def _prompt_sets(table: dict) -> dict[str, dict]:
    if not table:
        raise SweepConfigError("sweep config: no prompt sets: add e.g. [prompts.train] with "
                               "source = \"professions\" and split = \"train\"")
    return {name: _prompt_spec(name, spec) for name, spec in table.items()}


def _prompt_spec(name: str, spec) -> dict:
    """The normalised description of one prompt set: it goes into cell ids, so two spellings
    of the same set (templates = 2, or the two template strings) give the same cells."""
    from . import prompts as P

    where = f"[prompts.{name}]"
    if not NAME.match(name):
        raise SweepConfigError(f"sweep config: prompt set name {name!r} may hold only letters, "
                               "digits, '_' and '-' (it prefixes result columns)")
    if not isinstance(spec, dict):
        raise _bad(where, "a table with source = ...", spec)
    _no_unknown(spec, PROMPT_KEYS, where)
    source = _choice(_opt(spec, "source", str, f"{where} source", "a string",
                          default="professions"), SOURCES, f"{where} source")
    out: dict = {"source": source}
    if source == "professions":
        out["split"] = _choice(_opt(spec, "split", str, f"{where} split", "a string",
                                    default="train"), SPLITS, f"{where} split")
    elif "split" in spec:
        raise SweepConfigError(f"sweep config: {where} split applies only to source = "
                               f"\"professions\", not {source!r}")
    if source == "jsonl":
        for key in ("templates",):
            if key in spec:
                raise SweepConfigError(f"sweep config: {where} {key} does not apply to a JSONL "
                                       "file (its lines are the prompts)")
        out.update(_jsonl_source(spec, where))
    else:
        out["templates"] = _templates(spec.get("templates"), where, P)
    for key in ("subjects", "limit"):
        value = _opt(spec, key, int, f"{where} {key}", "a positive integer")
        if value is not None:
            if value < 1:
                raise _bad(f"{where} {key}", "a positive integer", value)
            out[key] = value
    return out


def _templates(value, where: str, P) -> list[str]:
    if value is None:
        return list(P.TEMPLATES)
    if _is(value, int):
        if not 1 <= value <= len(P.TEMPLATES):
            raise _bad(f"{where} templates", f"1..{len(P.TEMPLATES)} (the first N built-in "
                       "templates) or a list of templates", value)
        return list(P.TEMPLATES[:value])
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        for t in value:
            try:
                P.check_template(t)
            except InterpError as e:
                raise SweepConfigError(f"sweep config: {where} templates: {e}") from None
        return list(value)
    raise _bad(f"{where} templates", "an integer (the first N built-in templates) or a "
               "non-empty list of template strings", value)


def _jsonl_source(spec: dict, where: str) -> dict:
    path = _opt(spec, "path", str, f"{where} path", "a path to a JSONL file")
    if path is None:
        raise SweepConfigError(f"sweep config: {where} has source = \"jsonl\" but no path")
    file = Path(path).expanduser()
    if not file.is_file():
        raise SweepConfigError(f"sweep config: {where} path {path!r}: no such file "
                               "(relative paths start from the working directory)")
    # The content's hash, not only the path, identifies the set: editing the file makes new cells.
    return {"path": str(file.resolve()),
            "sha256": hashlib.sha256(file.read_bytes()).hexdigest()[:16]}


def _trace_section(table: dict, prompts: dict) -> dict:
    from .trace import KINDS, METHODS

    _no_unknown(table, TRACE_KEYS, "[trace]")
    sets = [_known_set(n, prompts, "trace.prompts")
            for n in _axis(table, "prompts", str, "trace.prompts", "prompt set names")]
    corruptions = [_choice(c, CORRUPTIONS, "a trace.corruptions entry")
                   for c in _axis(table, "corruptions", str, "trace.corruptions",
                                  "'noise' or 'swap'", default=["noise"])]
    kinds = _nested_axis(table, "kinds", str, "trace.kinds", '[["mlp", "attn"]]',
                         default=[["resid", "mlp", "attn"]])
    for combo in kinds:
        for k in combo:
            _choice(k, KINDS, "a trace.kinds entry")
    windows = _axis(table, "windows", int, "trace.windows", "positive integers", default=[1])
    if min(windows) < 1:
        raise _bad("every entry of trace.windows", "a positive integer", min(windows))
    samples = _opt(table, "samples", int, "trace.samples", "a positive integer", default=3)
    if samples < 1:
        raise _bad("trace.samples", "a positive integer", samples)
    words = table.get("swap_words")
    if words is not None and not (isinstance(words, list) and words
                                  and all(isinstance(w, str) for w in words)):
        raise _bad("trace.swap_words", "a non-empty list of words", words)
    return {
        "prompts": sets, "corruptions": corruptions, "kinds": kinds, "windows": windows,
        "samples": samples, "swap_words": words,
        "metric": _choice(_opt(table, "metric", str, "trace.metric", "a string",
                               default="logodds"), METRICS, "trace.metric"),
        "method": _choice(_opt(table, "method", str, "trace.method", "a string",
                               default="exact"), METHODS, "trace.method"),
    }


def lsdm_options() -> set[str]:
    """The keyword arguments of interp.edit.lsdm that an [edit] table may pass on."""
    from . import edit

    params = inspect.signature(edit.lsdm).parameters
    return {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} - EDIT_RESERVED


def _edit_section(table: dict, prompts: dict) -> dict:
    passed = set(table) - EDIT_KEYS
    allowed = lsdm_options()
    if passed - allowed:
        reserved = sorted((passed - allowed) & EDIT_RESERVED)
        hint = (f" ({', '.join(reserved)} come(s) from the grid or the top-level seed)"
                if reserved else "")
        _no_unknown(table, EDIT_KEYS | allowed, "[edit] (the sweep's keys and those of "
                    "interp.edit.lsdm)", hint)
    train = _opt(table, "prompts", str, "edit.prompts", "the name of a prompt set")
    if train is None:
        raise SweepConfigError("sweep config: edit.prompts is missing: name the prompt set the "
                               "edit balances, e.g. prompts = \"train\"")
    _known_set(train, prompts, "edit.prompts")
    evals = [_known_set(n, prompts, "edit.eval")
             for n in _axis(table, "eval", str, "edit.eval", "prompt set names", default=[train])]
    layers = _nested_axis(table, "layers", int, "edit.layers", "[[0, 1, 2], [3, 4]]")
    for combo in layers:
        if min(combo) < 0:
            raise _bad("every entry of edit.layers", "a layer index >= 0", min(combo))
    lam = _axis(table, "lam", float, "edit.lam", "positive numbers")
    if min(lam) <= 0:
        raise _bad("every entry of edit.lam", "a positive number", min(lam))
    suites = [_choice(s, EDIT_SUITES, "an edit.suites entry")
              for s in _axis(table, "suites", str, "edit.suites", "suite names",
                             default=list(EDIT_SUITES))]
    definitional = _opt(table, "definitional", str, "edit.definitional",
                        "the name of a prompt set")
    if definitional is not None:
        _known_set(definitional, prompts, "edit.definitional")
    heldout = _opt(table, "heldout_tokens", int, "edit.heldout_tokens", "a token count >= 2")
    if heldout is not None and heldout < 2:
        raise _bad("edit.heldout_tokens", "a token count >= 2", heldout)
    return {"prompts": train, "eval": list(dict.fromkeys(evals)),
            "layers": [sorted(set(c)) for c in layers],  # lsdm sorts them too: same cell
            "lam": lam, "suites": suites, "definitional": definitional,
            "heldout_tokens": heldout, "options": {k: table[k] for k in sorted(passed)}}


# ---------------------------------------------------------------------------------------------
# The grid


@dataclass(frozen=True)
class Cell:
    """One point of the grid. `params` holds everything that determines its result."""

    kind: str  # "trace" or "edit"
    params: dict

    @property
    def id(self) -> str:
        blob = json.dumps(self.params, sort_keys=True, separators=(",", ":"))
        return f"{self.kind}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def columns(self) -> dict:
        """The parameters that vary over the grid, flat, for the results table."""
        p = self.params
        if self.kind == "trace":
            return {"prompts": p["prompts"], "corruption": p["corruption"],
                    "kinds": ",".join(p["kinds"]), "window": p["window"],
                    "samples": p.get("samples"), "metric": p["metric"], "method": p["method"]}
        return {"prompts": p["prompts"], "layers": ",".join(map(str, p["layers"])),
                "lam": p["lam"]}

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.columns().items() if v is not None)


def grid(config, model_name: str | None = None) -> list[Cell]:
    """Every cell of the sweep, traces first, in a fixed order. model_name: the name of a model
    given in place of the config's (it is part of each cell's identity)."""
    cfg = read_config(config)
    name = model_name or cfg.model_name
    cells = []
    if cfg.trace:
        t = cfg.trace
        for ps, corruption, kinds, window in itertools.product(t["prompts"], t["corruptions"],
                                                               t["kinds"], t["windows"]):
            params = {"model": name, "seed": cfg.seed, "prompts": ps,
                      "prompt_set": cfg.prompts[ps], "corruption": corruption,
                      "kinds": list(kinds), "window": window, "metric": t["metric"],
                      "method": t["method"]}
            # Each corruption's own knob only: a swap cell does not change with `samples`.
            if corruption == "noise":
                params["samples"] = t["samples"]
            elif t["swap_words"]:
                params["swap_words"] = t["swap_words"]
            cells.append(Cell("trace", params))
    if cfg.edit:
        e = cfg.edit
        for layers, lam in itertools.product(e["layers"], e["lam"]):
            cells.append(Cell("edit", {
                "model": name, "seed": cfg.seed, "prompts": e["prompts"],
                "prompt_set": cfg.prompts[e["prompts"]], "layers": layers, "lam": lam,
                "options": e["options"], **_evaluation(cfg)}))
    # Spellings that normalise alike (lam 100 and 100.0, layers [1, 0] and [0, 1]) are one cell.
    return list({c.id: c for c in cells}.values())


def _evaluation(cfg: SweepConfig) -> dict:
    """What an edit is measured on: part of edit cells' identity and of the baseline's."""
    e = cfg.edit
    return {"eval": {n: cfg.prompts[n] for n in e["eval"]}, "suites": e["suites"],
            "definitional": (None if e["definitional"] is None
                             else cfg.prompts[e["definitional"]]),
            "heldout_tokens": e["heldout_tokens"]}


# ---------------------------------------------------------------------------------------------
# Running


def run_sweep(config, out_dir=None, *, model=None, progress: bool | None = None) -> SweepResult:
    """Run every cell of the sweep that has no valid done.json yet; returns the `SweepResult`.

    config: a TOML path or a dict (see configs/sweep_example.toml). out_dir: overrides the
    config's `out`. model: an already loaded model to use instead of loading the config's (its
    name goes into the cell ids). progress: False hides the progress bar over cells."""
    cfg = read_config(config)
    out = _out_dir(cfg, out_dir)
    cells = grid(cfg, model.name if model is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    _save_config(cfg, out / "config.toml")
    pending = [c for c in cells if _done(out, c) is None]
    if model is not None or pending:
        model = model if model is not None else _load_model(cfg)
        _check_against_model(cfg, model)
        pending += _stale(out, cells, pending, model.fingerprint())
        pending.sort(key=cells.index)
    write_results(out, cells)
    if pending:
        run = _Run(cfg, model, out)
        bar = tqdm(total=len(cells), initial=len(cells) - len(pending), desc="sweep",
                   unit="cell", disable=progress is False)
        try:
            for cell in pending:
                bar.set_postfix_str(cell.label(), refresh=True)
                run.cell(cell)
                write_results(out, cells)
                bar.update()
        finally:
            bar.close()
    return SweepResult.load(out)


def _out_dir(cfg: SweepConfig, out_dir) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    if cfg.out is None:
        raise SweepConfigError("sweep config: no output directory: set out = \"runs/...\" in "
                               "the config or pass out_dir")
    return Path(cfg.out)


def _load_model(cfg: SweepConfig):
    from . import load_model

    return load_model(cfg.model)


def _check_against_model(cfg: SweepConfig, model) -> None:
    """Grid values the model cannot take, found before any cell runs rather than in each."""
    n = model.arch.n_layers
    if cfg.trace and max(cfg.trace["windows"]) > n:
        raise SweepConfigError(f"sweep config: trace.windows has {max(cfg.trace['windows'])}, "
                               f"but {model.name} has only {n} layers")
    if cfg.edit:
        top = max(max(c) for c in cfg.edit["layers"])
        if top >= n:
            raise SweepConfigError(f"sweep config: edit.layers has layer {top}, but {model.name} "
                                   f"has layers 0..{n - 1}")


def _done(out: Path, cell: Cell) -> dict | None:
    """The cell's done.json if it is complete and belongs to this cell, else None."""
    try:
        done = json.loads((out / "cells" / cell.id / "done.json").read_text())
    except (OSError, ValueError):
        return None
    if done.get("id") != cell.id or done.get("params") != cell.params:
        return None
    return done


def _stale(out: Path, cells: list[Cell], pending: list[Cell], fingerprint: str) -> list[Cell]:
    """Finished cells computed on other weights (a model file replaced under the same name)."""
    stale = [c for c in cells if c not in pending
             and _done(out, c).get("fingerprint") not in (None, fingerprint)]
    if stale:
        warnings.warn(f"{len(stale)} finished cell(s) were computed on other weights than this "
                      f"model's ({fingerprint[:12]}); recomputing them", stacklevel=3)
    for c in stale:  # out of the results table from now on, even if the rerun stops early
        (out / "cells" / c.id / "done.json").unlink()
    return stale


class _Run:
    """One sweep run: the model, its prompt sets and its baseline, built once and shared."""

    def __init__(self, cfg: SweepConfig, model, out: Path):
        self.cfg, self.model, self.out = cfg, model, out
        self._sets: dict = {}
        self._baseline: dict | None = None
        self._reference = None

    def prompts(self, name: str):
        if name not in self._sets:
            self._sets[name] = build_prompt_set(self.model, name, self.cfg.prompts[name],
                                                self.cfg.seed)
        return self._sets[name]

    def cell(self, cell: Cell) -> None:
        directory = self.out / "cells" / cell.id
        shutil.rmtree(directory, ignore_errors=True)  # a killed run's partial artefacts
        directory.mkdir(parents=True)
        start = time.time()
        record = {"id": cell.id, "type": cell.kind, "params": cell.params,
                  "fingerprint": self.model.fingerprint()}
        try:
            metrics = (self._trace if cell.kind == "trace" else self._edit)(cell, directory)
            record.update(status="done", metrics=metrics)
        except InterpError as e:
            # A cell the method cannot compute (an ill-conditioned λ, no swappable prompt) is a
            # result of the sweep, not a crash: it is recorded and the sweep goes on.
            record.update(status="failed", error=f"{type(e).__name__}: {e}", metrics={})
        record["seconds"] = round(time.time() - start, 2)
        record["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds")
        with atomic_write(directory / "done.json") as f:  # last: it marks the cell finished
            json.dump(_plain(record), f, indent=2)

    # -- traces -------------------------------------------------------------------------------

    def _trace(self, cell: Cell, directory: Path) -> dict:
        import interp  # looked up at call time, so a patched interp.trace is the one used

        p = cell.params
        ps, skipped = self.prompts(p["prompts"]), 0
        if p["corruption"] == "swap":
            ps, skipped = swappable(self.model, ps, p.get("swap_words"))
        result = interp.trace(self.model, ps, kinds=p["kinds"], corruption=p["corruption"],
                              metric=p["metric"], window=p["window"], samples=p.get("samples"),
                              swap_words=p.get("swap_words"), seed=p["seed"],
                              method=p["method"], progress=False)
        result.save(directory / "trace")
        return {**trace_metrics(result), "n_prompts": len(ps), "n_skipped": skipped}

    # -- edits --------------------------------------------------------------------------------

    def _edit(self, cell: Cell, directory: Path) -> dict:
        from . import edit as E

        p = cell.params
        before = self.baseline()
        edit = E.lsdm(self.model, self.prompts(p["prompts"]), layers=p["layers"], lam=p["lam"],
                      seed=p["seed"], progress=False, **p["options"])
        edit.save(directory / "edit.safetensors")
        with edit.applied(self.model):
            report, caps, after = self.evaluate(with_kl=True)
        report.save(directory / "bias")
        caps.save(directory / "capability")
        targets = {f"target_{k}": v for k, v in edit.meta.get("targets", {}).items()
                   if _is(v, float)}
        return {**compare(before, after), **targets}

    def evaluate(self, *, with_kl: bool):
        """The bias report on the eval sets, the capability report, and their headline numbers."""
        from . import bias as measure_bias
        from . import capability as C

        e = self.cfg.edit
        report = measure_bias(self.model, {n: self.prompts(n) for n in e["eval"]},
                              progress=False)
        numbers = {}
        summary = report.summary(seed=self.cfg.seed)
        for name in e["eval"]:
            numbers[f"{name}_abs_gap"] = float(summary.loc[name, "abs_gap"])
            numbers[f"{name}_abs_logodds"] = float(summary.loc[name, "abs_logodds"])
        suites = [s for s in e["suites"] if s not in ("definitional", "kl")]
        results = list(C.capability(self.model, suites, text=self.heldout(),
                                    seed=self.cfg.seed).results.values())
        if "definitional" in e["suites"]:
            defs = self.prompts(e["definitional"]) if e["definitional"] else None
            results.append(C.definitional(self.model, defs, seed=self.cfg.seed))
        if with_kl and "kl" in e["suites"]:
            results.append(C.kl_divergence(self.model, self.reference(), seed=self.cfg.seed))
        caps = C.CapabilityReport(results, {"model": self.model.name,
                                            "fingerprint": self.model.fingerprint()})
        names = {"facts": "facts_acc", "perplexity": "perplexity",
                 "definitional": "definitional_acc", "kl": "kl"}
        numbers.update({names[r.name]: r.value for r in results})
        return report, caps, numbers

    def reference(self):
        """The unedited model's next-token distributions, for the KL suite (taken once)."""
        if self._reference is None:
            from . import capability as C

            self._reference = C.next_token_logprobs(self.model, self.heldout())
        return self._reference

    def heldout(self) -> str | None:
        """The text perplexity and KL are measured on: the bundled held-out prose, or its first
        `heldout_tokens` tokens (a full pass over it is the slowest part of an evaluation)."""
        n = self.cfg.edit["heldout_tokens"]
        if n is None:
            return None
        from . import capability as C

        tok = self.model.tokenizer
        return tok.decode(tok(C.heldout_text())["input_ids"][:n])

    def baseline(self) -> dict:
        """The numbers before any edit: read from out/baseline.json when it was measured on
        these weights with this evaluation, else measured now and saved there."""
        if self._baseline is not None:
            return self._baseline
        path = self.out / "baseline.json"
        key = _key({"model": self.model.name, "fingerprint": self.model.fingerprint(),
                    "seed": self.cfg.seed, **_evaluation(self.cfg)})
        try:
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                self._baseline = saved["metrics"]
                return self._baseline
        except (OSError, ValueError, KeyError):
            pass
        report, caps, numbers = self.evaluate(with_kl=False)
        report.save(self.out / "baseline" / "bias")
        caps.save(self.out / "baseline" / "capability")
        with atomic_write(path) as f:
            json.dump(_plain({"key": key, "model": self.model.name,
                              "fingerprint": self.model.fingerprint(), "metrics": numbers}),
                      f, indent=2)
        self._baseline = numbers
        return numbers


def _key(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _plain(value):
    """JSON-safe copy: numpy scalars to Python, NaN to null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Prompt sets and per-cell summaries


def build_prompt_set(model, name: str, spec: dict, seed: int):
    """The prompt set a [prompts.NAME] spec describes, for this model."""
    from . import prompts as P
    from .cli import pick

    if spec["source"] == "professions":
        split = None if spec["split"] == "all" else spec["split"]
        ps = P.professions(model, split, templates=spec["templates"])
    elif spec["source"] == "definitional":
        ps = P.definitional(model, templates=spec["templates"])
    else:
        ps = P.from_jsonl(model, spec["path"])
    ps.name = name
    if "subjects" in spec:
        ps = _some_subjects(ps, spec["subjects"], seed)
    if "limit" in spec:
        ps = pick(ps, spec["limit"], seed)
    return ps.require_nonempty()


def _some_subjects(ps, n: int, seed: int):
    """A seeded sample of n subjects with all of their prompts: an edit balances a subject over
    every template it appears in, so subjects, not prompts, are the unit to sample."""
    subjects = ps.subjects()
    if n >= len(subjects):
        return ps
    chosen = {subjects[int(i)] for i in np.random.default_rng(seed).choice(len(subjects), n,
                                                                           replace=False)}
    return ps.filter(lambda p: p.subject in chosen)


def swappable(model, ps, words=None):
    """The prompts a swap corruption can counterfactualise (a swap word of the subject's token
    length exists), and how many were left out."""
    from . import corruption as C
    from .errors import TokenizationError

    swap = C.Swap(words) if words else C.Swap()
    keep = []
    for p in ps:
        try:
            swap.corrupt_ids(model, p)
            keep.append(p)
        except TokenizationError:
            pass
    if not keep:
        raise InterpError(f"no prompt of {ps.name!r} can be swapped: no swap word "
                          f"({', '.join(swap.words)}) has the token length of any subject; "
                          "give trace.swap_words of matching lengths, or use noise")
    kept = {id(p) for p in keep}
    return ps.filter(lambda p: id(p) in kept), len(ps) - len(keep)


def trace_metrics(result) -> dict:
    """A trace's headline: its strongest site, the MLP peak at the subject's last token (where
    LSDM edits) and the attention peak at the last token (where the pronoun is read)."""
    top = result.top_sites(1).iloc[0]
    out = {"top_kind": top["kind"], "top_layer": int(top["layer"]),
           "top_token_group": top["token_group"], "top_effect": float(top["effect"]),
           "total_effect": float(result.prompts["total_effect"].abs().mean())}
    for kind, group in (("mlp", "last subject token"), ("attn", "last token")):
        try:
            profile = result.layer_profile(kind, group)
        except InterpError:  # this kind was not traced
            continue
        out[f"{kind}_peak_layer"] = int(profile.idxmax())
        out[f"{kind}_peak_effect"] = float(profile.max())
    if "mlp" in result.spec["kinds"]:
        out["mlp_suggested_layers"] = ",".join(map(str, result.suggest_layers("mlp")))
    return out


def compare(before: dict, after: dict) -> dict:
    """Before/after columns per measure, with the relative change of the bias measures."""
    out = {}
    for name, value in after.items():
        if name == "kl":  # zero before by definition
            out["kl_after"] = value
            continue
        b = before.get(name)
        out[f"{name}_before"], out[f"{name}_after"] = b, value
        if name.endswith(("_abs_gap", "_abs_logodds")) and b:
            out[f"{name}_change"] = (value - b) / b
    return out


# ---------------------------------------------------------------------------------------------
# Results


def write_results(out: Path, cells: list[Cell]) -> pd.DataFrame:
    """Rebuild out/results.csv from the done.json of every finished cell of the grid."""
    rows = []
    for cell in cells:
        done = _done(out, cell)
        if done is None:
            continue
        row = {"cell": cell.id, "type": cell.kind, "status": done.get("status", "done"),
               **cell.columns(), **done.get("metrics", {}), "seconds": done.get("seconds")}
        if done.get("error"):
            row["error"] = done["error"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    with atomic_write(out / "results.csv") as f:
        frame.to_csv(f, index=False)
    return frame


@dataclass
class SweepResult:
    """The tidy table of a sweep (one row per finished cell) and where its artefacts lie."""

    frame: pd.DataFrame
    out: Path
    config: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, out_dir) -> SweepResult:
        from pandas.errors import EmptyDataError

        out = Path(out_dir)
        if not (out / "results.csv").is_file():
            raise InterpError(f"no sweep results at {out}: results.csv is missing")
        try:
            frame = pd.read_csv(out / "results.csv")
        except EmptyDataError:  # a sweep with no finished cell yet
            frame = pd.DataFrame()
        for column in INT_COLUMNS & set(frame.columns):  # CSV made them float where NaN
            frame[column] = frame[column].astype("Int64")
        config = {}
        if (out / "config.toml").is_file():
            config = _load_toml(out / "config.toml")[0]
        return cls(frame, out, config)

    def cell_dir(self, cell_id: str) -> Path:
        return self.out / "cells" / cell_id

    def summary(self) -> str:
        """A readable report: counts, then one table for traces and one for edits."""
        f = self.frame
        if f.empty:
            return f"sweep {self.out}: no finished cells"
        failed = f[f["status"] != "done"]
        counts = (f"{(f['type'] == 'trace').sum()} traces, {(f['type'] == 'edit').sum()} edits"
                  + (f", {len(failed)} failed" if len(failed) else ""))
        parts = [f"sweep {self.out}: {len(f)} cells finished ({counts})"]
        parts += _trace_summary(f[(f["type"] == "trace") & (f["status"] == "done")])
        parts += _edit_summary(f[(f["type"] == "edit") & (f["status"] == "done")])
        if len(failed):
            parts.append("\nFailed cells (delete cells/<id>/ to retry):")
            parts += [f"  {r.cell} {r.type}: {r.error}" for r in failed.itertuples()]
        return "\n".join(parts)


def _table_text(frame: pd.DataFrame, columns: list[str]) -> str:
    shown = frame[[c for c in columns if c in frame.columns]].dropna(axis=1, how="all")
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _trace_summary(f: pd.DataFrame) -> list[str]:
    if f.empty:
        return []
    columns = ["cell", "prompts", "corruption", "kinds", "window", "samples", "top_kind",
               "top_layer", "top_token_group", "top_effect", "mlp_peak_layer",
               "mlp_peak_effect", "attn_peak_layer", "attn_peak_effect"]
    return ["\nTraces (peaks: MLP at the last subject token, attention at the last token):",
            _table_text(f, columns)]


def _edit_summary(f: pd.DataFrame) -> list[str]:
    if f.empty:
        return []
    measures = [c[: -len("_after")] for c in f.columns
                if c.endswith("_after") and not c.startswith("target_")]
    before = [f"{m} {f[m + '_before'].iloc[0]:.3f}" for m in measures
              if f"{m}_before" in f.columns and pd.notna(f[m + "_before"].iloc[0])]
    columns = ["cell", "layers", "lam"]
    for m in measures:
        columns += [f"{m}_after"] + ([f"{m}_change"] if f"{m}_change" in f.columns else [])
    return ["\nEdits (before any edit: " + ", ".join(before) + "; change = relative):",
            _table_text(f, columns)]


# ---------------------------------------------------------------------------------------------
# The config copy


def _save_config(cfg: SweepConfig, path: Path) -> None:
    """out/config.toml: the file as written, or the dict given, as TOML."""
    text = cfg.text if cfg.text is not None else toml_dumps(cfg.raw)
    with atomic_write(path) as f:
        f.write(text)


def toml_dumps(table: dict, prefix: tuple[str, ...] = ()) -> str:
    """TOML for the plain values a sweep config holds (no TOML writer in the standard library):
    scalars, lists of them, and nested tables."""
    lines, subtables = [], []
    for key, value in table.items():
        if isinstance(value, dict):
            subtables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in subtables:
        name = ".".join(_toml_key(k) for k in (*prefix, key))
        lines.append(f"\n[{name}]")
        lines.append(toml_dumps(value, (*prefix, key)).strip("\n"))
    return "\n".join(line for line in lines if line != "") + "\n"


def _toml_key(key: str) -> str:
    return key if NAME.match(key) else json.dumps(key)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))  # JSON's escapes are valid in TOML basic strings
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise SweepConfigError(f"sweep config: a {type(value).__name__} value ({value!r}) cannot be "
                           "written to TOML; use strings, numbers, booleans and lists")
