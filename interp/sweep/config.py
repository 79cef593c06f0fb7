"""Reading a sweep configuration (TOML or a dict) into a checked `SweepConfig`, and writing its
copy beside the results."""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..common.errors import InterpError
from ..common.io import atomic_write
from ..locate.spec import KINDS, METHODS
from ..measure import prompts as P
from ..measure.contrast import contrast as read_contrast
from ..mitigate.lsdm import LSDMSettings, lsdm
from ..model.load import BUNDLED_NAME
from .checks import (
    SweepConfigError,
    bad_value,
    grid_axis,
    is_kind,
    known_prompt_set,
    nested_grid_axis,
    no_unknown_keys,
    one_of,
    optional_key,
    sub_table,
)

CORRUPTIONS = ("noise", "swap")

METRICS = ("logodds", "gap", "abs_gap", "p_male", "p_female")

SOURCES = ("professions", "definitional", "jsonl", "contrast")

SPLITS = ("train", "test", "all")

EDIT_SUITES = ("facts", "perplexity", "definitional", "declared", "kl")

BUNDLED_ALIASES = ("bundled", "smollm2-135m-instruct")

TOP_KEYS = {"model", "out", "seed", "prompts", "trace", "edit"}

PROMPT_KEYS = {"source", "split", "templates", "subjects", "limit", "path", "contrast"}

TRACE_KEYS = {"prompts", "corruptions", "kinds", "windows", "samples", "metric", "method",
              "swap_words", "contrast"}

EDIT_KEYS = {"prompts", "eval", "layers", "lam", "suites", "definitional", "heldout_tokens"}


# lsdm arguments a sweep sets itself: from the grid, the top-level seed, or the run.
EDIT_RESERVED = {"model", "prompts", "layers", "lam", "seed", "progress"}

NAME = re.compile(r"^[A-Za-z0-9_-]+$")


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

        return BUNDLED_NAME if self.model is None else self.model


def load_toml(path: Path) -> tuple[dict, str]:
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
        raw, text = load_toml(Path(config))
    elif isinstance(config, dict):
        raw = config
    else:
        raise SweepConfigError(f"a sweep config is a TOML path or a dict, not "
                               f"{type(config).__name__}")
    no_unknown_keys(raw, TOP_KEYS, "the top level")
    model = optional_key(raw, "model", str, "model",
                         "a model spec such as 'bundled' or 'tiny-llama'")
    if model is not None and model.lower() in BUNDLED_ALIASES:
        model = None
    prompts = _prompt_sets(sub_table(raw, "prompts", "prompts"))
    if "trace" not in raw and "edit" not in raw:
        raise SweepConfigError("nothing to run: add a [trace] table, an [edit] table, or both")
    trace = _trace_section(sub_table(raw, "trace", "trace"), prompts) if "trace" in raw else None
    edit = _edit_section(sub_table(raw, "edit", "edit"), prompts) if "edit" in raw else None
    return SweepConfig(
        model=model,
        out=optional_key(raw, "out", str, "out", "a directory path"),
        seed=optional_key(raw, "seed", int, "seed", "an integer", default=0),
        prompts=prompts, trace=trace, edit=edit, raw=raw, text=text,
    )


def _prompt_sets(table: dict) -> dict[str, dict]:
    if not table:
        raise SweepConfigError("sweep config: no prompt sets: add e.g. [prompts.train] with "
                               "source = \"professions\" and split = \"train\"")
    return {name: _prompt_spec(name, spec) for name, spec in table.items()}


def _prompt_spec(name: str, spec) -> dict:
    """The normalised description of one prompt set: it goes into cell ids, so two spellings
    of the same set (templates = 2, or the two template strings) give the same cells."""

    where = f"[prompts.{name}]"
    if not NAME.match(name):
        raise SweepConfigError(f"sweep config: prompt set name {name!r} may hold only letters, "
                               "digits, '_' and '-' (it prefixes result columns)")
    if not isinstance(spec, dict):
        raise bad_value(where, "a table with source = ...", spec)
    no_unknown_keys(spec, PROMPT_KEYS, where)
    source = one_of(optional_key(spec, "source", str, f"{where} source", "a string",
                                 default="professions"), SOURCES, f"{where} source")
    out: dict = {"source": source}
    if source in ("professions", "contrast"):
        out["split"] = one_of(optional_key(spec, "split", str, f"{where} split", "a string",
                                           default="train"), SPLITS, f"{where} split")
    elif "split" in spec:
        raise SweepConfigError(f"sweep config: {where} split applies only to source = "
                               f"\"professions\" or \"contrast\", not {source!r}")
    if source == "contrast":
        for key in ("templates", "path"):
            if key in spec:
                raise SweepConfigError(f"sweep config: {where} {key} does not apply to a "
                                       "contrast's prompts (its contexts are the templates)")
        out["contrast"] = _contrast_name(spec.get("contrast"), f"{where} contrast")
    elif "contrast" in spec:
        raise SweepConfigError(f"sweep config: {where} contrast applies only to source = "
                               f"\"contrast\", not {source!r}")
    if source == "jsonl":
        for key in ("templates",):
            if key in spec:
                raise SweepConfigError(f"sweep config: {where} {key} does not apply to a JSONL "
                                       "file (its lines are the prompts)")
        out.update(_jsonl_source(spec, where))
    elif source != "contrast":
        out["templates"] = _templates(spec.get("templates"), where, P)
    for key in ("subjects", "limit"):
        value = optional_key(spec, key, int, f"{where} {key}", "a positive integer")
        if value is not None:
            if value < 1:
                raise bad_value(f"{where} {key}", "a positive integer", value)
            out[key] = value
    return out


def _contrast_name(value, where: str) -> str:
    """A built-in contrast's name or a contrast file, read now (a bad file is refused before
    any cell runs)."""
    if not isinstance(value, str) or not value:
        raise bad_value(where, "a built-in contrast's name or a contrast file", value)
    try:
        read_contrast(value)
    except InterpError as e:
        raise SweepConfigError(f"sweep config: {where}: {e}") from None
    return value


def _templates(value, where: str, P) -> list[str]:
    if value is None:
        return list(P.TEMPLATES)
    if is_kind(value, int):
        if not 1 <= value <= len(P.TEMPLATES):
            raise bad_value(f"{where} templates", f"1..{len(P.TEMPLATES)} (the first N built-in "
                            "templates) or a list of templates", value)
        return list(P.TEMPLATES[:value])
    if isinstance(value, list) and value and all(isinstance(t, str) for t in value):
        for t in value:
            try:
                P.check_template(t)
            except InterpError as e:
                raise SweepConfigError(f"sweep config: {where} templates: {e}") from None
        return list(value)
    raise bad_value(f"{where} templates", "an integer (the first N built-in templates) or a "
                    "non-empty list of template strings", value)


def _jsonl_source(spec: dict, where: str) -> dict:
    path = optional_key(spec, "path", str, f"{where} path", "a path to a JSONL file")
    if path is None:
        raise SweepConfigError(f"sweep config: {where} has source = \"jsonl\" but no path")
    file = Path(path).expanduser()
    if not file.is_file():
        raise SweepConfigError(f"sweep config: {where} path {path!r}: no such file "
                               "(relative paths start from the working directory)")
    try:
        P.read_jsonl(file)  # every line checked now, not when the cell runs
    except InterpError as e:
        raise SweepConfigError(f"sweep config: {where} path: {e}") from None
    # The content's hash, not only the path, identifies the set: editing the file makes new cells.
    return {"path": str(file.resolve()),
            "sha256": hashlib.sha256(file.read_bytes()).hexdigest()[:16]}


def _trace_section(table: dict, prompts: dict) -> dict:
    no_unknown_keys(table, TRACE_KEYS, "[trace]")
    sets = [known_prompt_set(n, prompts, "trace.prompts")
            for n in grid_axis(table, "prompts", str, "trace.prompts", "prompt set names")]
    corruptions = [one_of(c, CORRUPTIONS, "a trace.corruptions entry")
                   for c in grid_axis(table, "corruptions", str, "trace.corruptions",
                                      "'noise' or 'swap'", default=["noise"])]
    kinds = nested_grid_axis(table, "kinds", str, "trace.kinds", '[["mlp", "attn"]]',
                             default=[["resid", "mlp", "attn"]])
    for combo in kinds:
        for k in combo:
            one_of(k, KINDS, "a trace.kinds entry")
    windows = grid_axis(table, "windows", int, "trace.windows", "positive integers", default=[1])
    if min(windows) < 1:
        raise bad_value("every entry of trace.windows", "a positive integer", min(windows))
    samples = optional_key(table, "samples", int, "trace.samples", "a positive integer", default=3)
    if samples < 1:
        raise bad_value("trace.samples", "a positive integer", samples)
    words = table.get("swap_words")
    if words is not None and not (isinstance(words, list) and words
                                  and all(isinstance(w, str) for w in words)):
        raise bad_value("trace.swap_words", "a non-empty list of words", words)
    contrast = table.get("contrast")
    if contrast is not None:
        contrast = _contrast_name(contrast, "trace.contrast")
        if table.get("metric", "logodds") != "logodds":
            raise SweepConfigError("sweep config: trace.metric and trace.contrast: a contrast "
                                   "sets the metric (its lean); give one of them")
    return {
        "prompts": sets, "corruptions": corruptions, "kinds": kinds, "windows": windows,
        "samples": samples, "swap_words": words, "contrast": contrast,
        "metric": one_of(optional_key(table, "metric", str, "trace.metric", "a string",
                                      default="logodds"), METRICS, "trace.metric"),
        "method": one_of(optional_key(table, "method", str, "trace.method", "a string",
                                      default="exact"), METHODS, "trace.method"),
    }


def lsdm_options() -> set[str]:
    """The keyword arguments of interp.lsdm that an [edit] table may pass on: its own and the
    fields of its settings (`LSDMSettings`), which it takes by name."""

    params = inspect.signature(lsdm).parameters
    own = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} - {"settings"}
    return (own | {f.name for f in fields(LSDMSettings)}) - EDIT_RESERVED


def _edit_section(table: dict, prompts: dict) -> dict:
    passed = set(table) - EDIT_KEYS
    allowed = lsdm_options()
    if passed - allowed:
        reserved = sorted((passed - allowed) & EDIT_RESERVED)
        hint = (f" ({', '.join(reserved)} come(s) from the grid or the top-level seed)"
                if reserved else "")
        no_unknown_keys(table, EDIT_KEYS | allowed, "[edit] (the sweep's keys and those of "
                        "interp.lsdm)", hint)
    train = optional_key(table, "prompts", str, "edit.prompts", "the name of a prompt set")
    if train is None:
        raise SweepConfigError("sweep config: edit.prompts is missing: name the prompt set the "
                               "edit balances, e.g. prompts = \"train\"")
    known_prompt_set(train, prompts, "edit.prompts")
    evals = [known_prompt_set(n, prompts, "edit.eval")
             for n in grid_axis(table, "eval", str, "edit.eval", "prompt set names",
                                default=[train])]
    layers = nested_grid_axis(table, "layers", int, "edit.layers", "[[0, 1, 2], [3, 4]]")
    for combo in layers:
        if min(combo) < 0:
            raise bad_value("every entry of edit.layers", "a layer index >= 0", min(combo))
    lam = grid_axis(table, "lam", float, "edit.lam", "positive numbers")
    if min(lam) <= 0:
        raise bad_value("every entry of edit.lam", "a positive number", min(lam))
    suites = [one_of(s, EDIT_SUITES, "an edit.suites entry")
              for s in grid_axis(table, "suites", str, "edit.suites", "suite names",
                                 default=list(EDIT_SUITES))]
    definitional = optional_key(table, "definitional", str, "edit.definitional",
                                "the name of a prompt set")
    if definitional is not None:
        known_prompt_set(definitional, prompts, "edit.definitional")
    heldout = optional_key(table, "heldout_tokens", int, "edit.heldout_tokens",
                           "a token count >= 2")
    if heldout is not None and heldout < 2:
        raise bad_value("edit.heldout_tokens", "a token count >= 2", heldout)
    return {"prompts": train, "eval": list(dict.fromkeys(evals)),
            "layers": [sorted(set(c)) for c in layers],  # lsdm sorts them too: same cell
            "lam": lam, "suites": suites, "definitional": definitional,
            "heldout_tokens": heldout, "options": {k: table[k] for k in sorted(passed)}}


def save_config(cfg: SweepConfig, path: Path) -> None:
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
