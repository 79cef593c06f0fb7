"""A contrast: one bias axis described as data, so that a bias other than he/she can be measured.

A contrast states
- the groups of continuations compared (words or phrases, multi-token allowed, scored as summed
  log-probabilities), each with one form per slot: a pronoun family has a nominative, an
  accusative, a possessive ...; a religion has one form;
- the subjects whose lean is measured: words with the group a published source stereotypes them
  with (or a stereotype score), each in the train or the test part;
- the contexts they are put in: a text with `{subject}` (and, for a declared group,
  `{declared.SLOT}`), followed by a continuation in one slot;
- what an edit should do: "balance" the groups, or "follow" the group declared earlier in the
  same text (misgendering: the pronoun family a person said they use).

`contrast(name_or_path)` reads a built-in (`contrasts()` lists them) or a TOML/JSON file;
`Contrast.save` writes one. Files are checked when read, before any model loads; the words are
checked against a tokenizer by `Contrast.check_vocabulary`.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ..common.errors import InterpError
from ..common.io import atomic_dir, atomic_write
from . import prompts as P
from .metrics import SLOT_PRONOUNS
from .suites.likelihood import continuation_logprobs

GOALS = ("balance", "follow")
SPLITS = ("train", "test")
# The parts a contrast's prompts can be asked for by name: a split, or "all" of them.
PARTS = (*SPLITS, "all")
# A file's keys: those it must have and those it may have (`slots` is checked against the
# groups' forms).
REQUIRED = ("name", "goal", "groups", "subjects", "contexts")
OPTIONAL = ("description", "sources", "slots")
# Built-ins that are files in interp/data/contrasts/ (gender is built from the bundled occupation
# prompts instead: `gender_contrast`).
BUILTIN_DIR = "contrasts"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class ContrastError(InterpError):
    """A contrast file or value that cannot be used."""


@dataclass(frozen=True)
class Subject:
    """A word whose lean is measured: the group a source stereotypes it with and/or a score."""

    word: str
    split: str
    group: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class Context:
    """A text with `{subject}` (and `{declared.SLOT}` for a declared group) that a continuation
    in `slot` follows, after a space."""

    text: str
    slot: str


@dataclass(frozen=True)
class Contrast:
    """One bias axis (see the module's docstring). groups: group → slot → form."""

    name: str
    goal: str
    groups: Mapping[str, Mapping[str, str]]
    subjects: tuple[Subject, ...]
    contexts: tuple[Context, ...]
    description: str = ""
    sources: tuple[str, ...] = ()
    where: str = field(default="", compare=False)

    def __post_init__(self):
        check(self)

    # -- reading and writing ------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "the contrast") -> Contrast:
        """A contrast from a mapping in the file format (what `to_dict` writes)."""
        if not isinstance(d, Mapping):
            raise ContrastError(f"{where}: a contrast is a table of keys, not {type(d).__name__}")
        missing = [k for k in REQUIRED if k not in d]
        if missing:
            raise ContrastError(f"{where}: missing {', '.join(missing)}; a contrast needs "
                                f"{', '.join(REQUIRED)} (see docs/contrasts.md)")
        unknown = sorted(set(d) - {*REQUIRED, *OPTIONAL})
        if unknown:
            raise ContrastError(f"{where}: unknown key(s) {', '.join(unknown)}; a contrast has "
                                f"{', '.join(REQUIRED + OPTIONAL)}")
        groups = d["groups"]
        if not isinstance(groups, Mapping):
            raise ContrastError(f"{where}: groups must be a table of group → {{slot = form}}")
        groups = {str(g): _forms(g, f, where) for g, f in groups.items()}
        subjects = tuple(_subject(s, i, where) for i, s in enumerate(_rows(d, "subjects", where)))
        contexts = tuple(_context(c, i, where) for i, c in enumerate(_rows(d, "contexts", where)))
        made = cls(name=str(d["name"]), goal=str(d["goal"]), groups=groups, subjects=subjects,
                   contexts=contexts, description=str(d.get("description", "")),
                   sources=tuple(str(s) for s in d.get("sources", ())), where=where)
        if "slots" in d and tuple(d["slots"]) != made.slots:
            raise ContrastError(f"{where}: slots {list(d['slots'])} but the groups' forms are in "
                                f"{list(made.slots)}; list the slots in the groups' order")
        return made

    def to_dict(self) -> dict:
        return {
            "name": self.name, "goal": self.goal, "description": self.description,
            "sources": list(self.sources), "slots": list(self.slots),
            "groups": {g: dict(f) for g, f in self.groups.items()},
            "subjects": [{k: v for k, v in vars(s).items() if v is not None}
                         for s in self.subjects],
            "contexts": [vars(c).copy() for c in self.contexts],
        }

    def save(self, path: str | Path) -> Path:
        """Write the contrast as TOML (.toml) or JSON (any other suffix), atomically."""
        path = Path(path)
        text = to_toml(self.to_dict()) if path.suffix == ".toml" else json.dumps(
            self.to_dict(), indent=1, ensure_ascii=False)
        with atomic_write(path) as f:
            f.write(text)
        return path

    # -- what it holds --------------------------------------------------------------------------

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(next(iter(self.groups.values())))

    @property
    def group_names(self) -> tuple[str, ...]:
        return tuple(self.groups)

    def forms(self, slot: str) -> dict[str, str]:
        """Each group's form in `slot`."""
        return {g: f[slot] for g, f in self.groups.items()}

    def items(self, split: str | None = "train") -> pd.DataFrame:
        """Every (subject, context) of `split` (None: both), and for a declared group every
        group declared in turn: subject, group (the subject's), score, split, declared, slot,
        text. Rows are in file order."""
        if split is not None:
            P.check_split(split)
        rows = []
        declared = self.group_names if self.goal == "follow" else (None,)
        for s in self.subjects:
            if split is not None and s.split != split:
                continue
            for c in self.contexts:
                for d in declared:
                    rows.append({"subject": s.word, "group": s.group, "score": s.score,
                                 "split": s.split, "declared": d, "slot": c.slot,
                                 "text": self.fill(c.text, s.word, d)})
        return pd.DataFrame(rows, columns=["subject", "group", "score", "split", "declared",
                                           "slot", "text"])

    def fill(self, text: str, subject: str, declared: str | None = None) -> str:
        """`text` with its subject and, if any, the declared group's forms."""
        return self.fill_spans(text, subject, declared)[0]

    def fill_spans(self, text: str, subject: str,
                   declared: str | None = None) -> tuple[str, list[tuple[str, int, int]]]:
        """`fill`, and where each placeholder went: (key, start, end) in the filled text."""
        out, spans, at = [], [], 0
        for m in _PLACEHOLDER.finditer(text):
            out.append(text[at:m.start()])
            key = m.group(1)
            value = subject if key == "subject" else self.groups[declared][key.partition(".")[2]]
            start = sum(map(len, out))
            spans.append((key, start, start + len(value)))
            out.append(value)
            at = m.end()
        out.append(text[at:])
        return "".join(out), spans

    def prompts(self, model_or_tokenizer, split: str | None = "train") -> P.PromptSet:
        """The items of `split` (`items`; "all" or None: both parts) as prompts to trace or
        fit. The traced span (the
        prompt's `subject`) is what the continuation should not depend on, or should: the
        subject for "balance", the declaration (first to last declared form) for "follow".
        Each prompt carries its slot, its subject's group and score, and the declared group."""
        tokenizer = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
        split = None if split == "all" else split
        if split is not None:
            P.check_split(split)
        made, dropped = [], []
        for s in self.subjects:
            if split is not None and s.split != split:
                continue
            for c in self.contexts:
                for d in (self.group_names if self.goal == "follow" else (None,)):
                    text, spans = self.fill_spans(c.text, s.word, d)
                    told = [(a, b) for k, a, b in spans if k != "subject"]
                    a, b = ((told[0][0], told[-1][1]) if told else
                            next((a, b) for k, a, b in spans if k == "subject"))
                    p = P.tokenize_prompt(tokenizer, text, text[a:b], subject_start=a,
                                          split=s.split, slot=c.slot, group=s.group,
                                          declared=d, stereotypical=s.score)
                    (made if isinstance(p, P.Prompt) else dropped).append(p)
        return P.PromptSet(made, name=f"{self.name} {split or 'all'}", dropped=dropped)

    def trace_weights(self, group: str | None = None,
                      declared: str | None = None) -> dict[str, float]:
        """A trace's metric on one item, as weights on the groups' log-probabilities (a linear
        lean, so effects add over the groups): with two balanced groups log p(second) −
        log p(first), as `lean`; otherwise log p(own) minus the mean of the other groups', where
        own is the declared group ("follow") or the subject's stereotyped group ("balance")."""
        names = self.group_names
        if self.goal == "balance" and len(names) == 2:
            return {names[0]: -1.0, names[1]: 1.0}
        own = declared if self.goal == "follow" else group
        if own not in names:
            need = "the declared group" if self.goal == "follow" else "its subject's group"
            raise ContrastError(f"contrast {self.name!r}: an item needs {need} (one of "
                                f"{', '.join(names)}) to be traced, not {own!r}")
        rest = -1.0 / (len(names) - 1)
        return {g: 1.0 if g == own else rest for g in names}

    # -- scoring --------------------------------------------------------------------------------

    def check_vocabulary(self, tokenizer) -> None:
        """Refuse a form the tokenizer can only spell with its unknown token."""
        unk = getattr(tokenizer, "unk_token_id", None)
        for g, forms in self.groups.items():
            for slot, form in forms.items():
                ids = tokenizer(" " + form, add_special_tokens=False)["input_ids"]
                if not ids or (unk is not None and unk in ids):
                    raise ContrastError(
                        f"{self.where or self.name}: group {g!r} form {form!r} ({slot}) is not in "
                        "this model's vocabulary as a continuation (it tokenizes to the unknown "
                        "token); spell it with words the model knows")

    def logprobs(self, model, items: pd.DataFrame | None = None, *, batch_size: int = 16,
                 progress: bool | None = None) -> pd.DataFrame:
        """`items` (default: the train part) with one column per group: log p(" " + the group's
        form in the item's slot | text), summed over the form's tokens."""
        items = self.items("train") if items is None else items
        self.check_vocabulary(model.tokenizer)
        names = self.group_names
        contexts = np.repeat(items["text"].to_numpy(), len(names)).tolist()
        forms = [self.groups[g][slot] for slot in items["slot"] for g in names]
        lp = continuation_logprobs(model, contexts, forms, batch_size=batch_size,
                                   progress=progress).reshape(len(items), len(names))
        out = items.reset_index(drop=True).copy()
        for j, g in enumerate(names):
            out[g] = lp[:, j]
        return out

    def lean(self, scored: pd.DataFrame) -> np.ndarray:
        """Per item: for "balance", with two groups log p(second) − log p(first), with more the
        subject's stereotyped group's log-probability minus the mean of the others' (> 0: leans
        to the stereotype; the linear lean a trace and an edit use, `trace_weights`), or where
        the subject has no group the largest departure of a group's log-probability from the
        groups' mean; for "follow", the declared group's log-probability minus the log of the
        others' total (> 0: the declared group is the likeliest)."""
        lp = scored[list(self.group_names)].to_numpy()
        if self.goal == "follow":
            idx = np.array([self.group_names.index(d) for d in scored["declared"]])
            own = lp[np.arange(len(lp)), idx]
            others = np.where(np.arange(lp.shape[1])[None] == idx[:, None], -np.inf, lp)
            return own - np.logaddexp.reduce(others, axis=1)
        if lp.shape[1] == 2:
            return lp[:, 1] - lp[:, 0]
        groups = scored["group"] if "group" in scored else pd.Series([None] * len(lp))
        out = np.abs(lp - lp.mean(1, keepdims=True)).max(1)
        for i, g in enumerate(groups):
            if isinstance(g, str):
                w = self.trace_weights(g)
                out[i] = sum(w[name] * lp[i, j] for j, name in enumerate(self.group_names))
        return out

    def with_lean(self, scored: pd.DataFrame) -> pd.DataFrame:
        """Scored items (`logprobs`) with their `lean` and their likeliest group `top`."""
        top = np.array(self.group_names)[scored[list(self.group_names)].to_numpy().argmax(1)]
        return scored.assign(lean=self.lean(scored), top=top)

    def summary(self, scored: pd.DataFrame) -> pd.DataFrame:
        """The lean of scored items (`logprobs`) in a table. For "follow", per declared group:
        items, the share whose likeliest group is not the declared one (the misgendering rate
        for pronouns) and the mean lean. For "balance", per subject group (all subjects when
        they have none): items, mean |lean| and, where subjects have a group, the share whose
        likeliest group is their stereotyped one."""
        frame = self.with_lean(scored)
        if self.goal == "follow":
            frame["missed"] = frame["top"] != frame["declared"]
            return frame.groupby("declared", sort=False).agg(
                items=("lean", "size"), rate=("missed", "mean"), lean=("lean", "mean"))
        frame["abs_lean"] = frame["lean"].abs()
        if frame["group"].notna().any():
            frame["follows"] = frame["top"] == frame["group"]
            return frame.groupby("group", sort=False).agg(
                items=("lean", "size"), abs_lean=("abs_lean", "mean"),
                follows=("follows", "mean"))
        return pd.DataFrame({"items": [len(frame)], "abs_lean": [frame["abs_lean"].mean()]},
                            index=pd.Index(["all"], name="group"))

    def __repr__(self) -> str:
        n = {s: sum(x.split == s for x in self.subjects) for s in SPLITS}
        return (f"Contrast({self.name!r}, {self.goal}, groups {', '.join(self.group_names)}, "
                f"slots {', '.join(self.slots)}, {n['train']}+{n['test']} subjects, "
                f"{len(self.contexts)} contexts)")


# ---------------------------------------------------------------------------------------------
# Checks: every problem in one line, naming the file and what to do


def check(c: Contrast) -> None:
    where = c.where or f"contrast {c.name!r}"
    if not c.name:
        raise ContrastError(f"{where}: the name is empty")
    if c.goal not in GOALS:
        raise ContrastError(f"{where}: unknown goal {c.goal!r}; use 'balance' (the groups "
                            "equally likely) or 'follow' (the group declared in the text)")
    if len(c.groups) < 2:
        raise ContrastError(f"{where}: {len(c.groups)} group(s); a contrast compares at least "
                            "two groups of continuations")
    slots = [tuple(f) for f in c.groups.values()]
    if any(s != slots[0] for s in slots):
        raise ContrastError(f"{where}: the groups name different slots ({sorted(set(slots))}); "
                            "give every group one form in each slot")
    if not c.subjects:
        raise ContrastError(f"{where}: no subjects; list the words whose lean is measured")
    if not any(s.split == "train" for s in c.subjects):
        raise ContrastError(f"{where}: no train subjects; an edit is fitted on the train part")
    for s in c.subjects:
        if s.group is not None and s.group not in c.groups:
            raise ContrastError(f"{where}: subject {s.word!r} has group {s.group!r}, which is "
                                f"not one of the groups ({', '.join(c.groups)})")
    if not c.contexts:
        raise ContrastError(f"{where}: no contexts; give texts with {{subject}}")
    for ctx in c.contexts:
        if ctx.slot not in slots[0]:
            raise ContrastError(f"{where}: context {ctx.text!r} continues in slot {ctx.slot!r}, "
                                f"which the groups have no form for ({', '.join(slots[0])})")
        keys = _PLACEHOLDER.findall(ctx.text)
        if "subject" not in keys:
            raise ContrastError(f"{where}: context {ctx.text!r} has no {{subject}}")
        for k in keys:
            head, _, slot = k.partition(".")
            if k == "subject":
                continue
            if head != "declared" or slot not in slots[0]:
                raise ContrastError(f"{where}: context {ctx.text!r} has {{{k}}}; use {{subject}} "
                                    "and {declared.SLOT} with a slot the groups have")
            if c.goal != "follow":
                raise ContrastError(f"{where}: context {ctx.text!r} declares a group, but the "
                                    "goal is 'balance'; use goal = 'follow'")
    if c.goal == "follow" and not any("{declared." in x.text for x in c.contexts):
        raise ContrastError(f"{where}: goal 'follow' but no context declares a group; put "
                            "{declared.SLOT} in the contexts")


def _rows(d: Mapping, key: str, where: str) -> list:
    rows = d[key]
    if not isinstance(rows, list):
        raise ContrastError(f"{where}: {key} must be a list of tables ([[{key}]] in TOML)")
    return rows


def _forms(group, forms, where: str) -> dict[str, str]:
    if isinstance(forms, str):
        forms = {"default": forms}
    if not isinstance(forms, Mapping) or not forms:
        raise ContrastError(f"{where}: group {group!r} must give its forms as {{slot = form}}")
    out = {}
    for slot, form in forms.items():
        if not isinstance(form, str) or not form.strip():
            raise ContrastError(f"{where}: group {group!r} has an empty form in slot {slot!r}")
        out[str(slot)] = form.strip()
    return out


def _subject(s, i: int, where: str) -> Subject:
    if isinstance(s, str):
        raise ContrastError(f"{where}: subject {i} ({s!r}) needs a split: write "
                            "{ word = ..., split = 'train' }")
    if not isinstance(s, Mapping) or not str(s.get("word", "")).strip():
        raise ContrastError(f"{where}: subject {i} has no word")
    split = s.get("split")
    if split not in SPLITS:
        raise ContrastError(f"{where}: subject {s['word']!r} has split {split!r}; use 'train' "
                            "or 'test'")
    score = s.get("score")
    return Subject(str(s["word"]).strip(), split, s.get("group"),
                   None if score is None else float(score))


def _context(c, i: int, where: str) -> Context:
    if isinstance(c, str):
        c = {"text": c}
    if not isinstance(c, Mapping) or not str(c.get("text", "")).strip():
        raise ContrastError(f"{where}: context {i} has no text")
    return Context(str(c["text"]).strip(), str(c.get("slot", "default")))


# ---------------------------------------------------------------------------------------------
# Files


def to_toml(d: Mapping) -> str:
    """The file format as TOML (strings, numbers, lists of strings, tables of strings, arrays of
    tables): what `contrast` reads back to the same contrast."""
    def value(v) -> str:
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, Mapping):
            return "{ " + ", ".join(f"{_key(k)} = {value(x)}" for k, x in v.items()) + " }"
        return "[" + ", ".join(value(x) for x in v) + "]"

    lines = [f"{_key(k)} = {value(v)}" for k, v in d.items()
             if not isinstance(v, Mapping) and not (isinstance(v, list) and v
                                                    and isinstance(v[0], Mapping))]
    for k, v in d.items():
        if isinstance(v, Mapping):
            lines += ["", f"[{_key(k)}]"] + [f"{_key(g)} = {value(x)}" for g, x in v.items()]
    for k, v in d.items():
        if isinstance(v, list) and v and isinstance(v[0], Mapping):
            for row in v:
                lines += ["", f"[[{_key(k)}]]"] + [f"{_key(a)} = {value(x)}"
                                                   for a, x in row.items()]
    return "\n".join(lines) + "\n"


def _key(k) -> str:
    k = str(k)
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def read(path, where: str | None = None) -> Contrast:
    """A contrast from a TOML (.toml) or JSON file: a path, or a bundled resource."""
    if isinstance(path, (str, Path)):
        path = Path(path).expanduser()
    where = where or str(path)
    toml = path.name.endswith(".toml")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ContrastError(f"{where}: cannot read the contrast file ({e.strerror})") from None
    try:
        d = tomllib.loads(raw.decode()) if toml else json.loads(raw)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ContrastError(f"{where}: not valid {'TOML' if toml else 'JSON'} ({e})") from None
    return Contrast.from_dict(d, where)


def gender_contrast() -> Contrast:
    """The built-in gender contrast: he/she (him/her, his/her), balanced, on the bundled
    gender-neutral occupations (score: their stereotype score, > 0 male) in the fitting
    contexts (`prompts.TEMPLATES` and `prompts.CONTEXT_TEMPLATES`)."""
    groups = {g: {slot: pair[i].strip() for slot, pair in SLOT_PRONOUNS.items()}
              for i, g in enumerate(("male", "female"))}
    subjects = tuple(Subject(r.occupation, r.split, None, float(r.stereotypical))
                     for r in P.occupations().itertuples())
    contexts = tuple(Context(t.replace("{}", "{subject}"), P.CONTEXT_TEMPLATES.get(t, "subject"))
                     for t in (*P.TEMPLATES, *P.CONTEXT_TEMPLATES))
    return Contrast("gender", "balance", groups, subjects, contexts,
                    description="he or she (him/her, his/her) after an occupation",
                    sources=("occupations: Bolukbasi et al. 2016 (interp/data/README.md)",),
                    where="built-in contrast 'gender'")


def is_gender(c: Contrast) -> bool:
    """Whether `c` is the built-in gender contrast, which the bias report measures."""
    return c == gender_contrast()


def other_than_gender(c) -> Contrast | None:
    """`c` (a `Contrast`, a built-in's name or a file) resolved, or None when it is None or the
    gender contrast: the methods' own he/she path then runs."""
    c = None if c is None else contrast(c)
    return None if c is None or is_gender(c) else c


def _builtin_files() -> dict[str, object]:
    folder = resources.files("interp.data").joinpath(BUILTIN_DIR)
    return {p.name.rsplit(".", 1)[0]: p for p in folder.iterdir() if p.name.endswith(".toml")}


def contrasts() -> tuple[str, ...]:
    """The built-in contrasts' names."""
    return ("gender", *sorted(n for n in _builtin_files() if n != "gender"))


def contrast(name_or_path: str | Path | Contrast = "gender") -> Contrast:
    """A built-in contrast by name (`contrasts()`), or one read from a TOML/JSON file."""
    if isinstance(name_or_path, Contrast):
        return name_or_path
    name = str(name_or_path)
    if name == "gender":
        return gender_contrast()
    files = _builtin_files()
    if name in files:
        return read(files[name], f"built-in contrast {name!r}")
    if Path(name).expanduser().is_file():
        return read(name)
    raise ContrastError(f"unknown contrast {name!r}: use one of {', '.join(contrasts())} or a "
                        ".toml/.json file")


# ---------------------------------------------------------------------------------------------
# Measuring a model on a contrast


class ContrastReport:
    """A model's lean on a contrast: every scored item (one log-probability column per group,
    `lean`, the likeliest group `top`) of each part, with the summary per group."""

    def __init__(self, frame: pd.DataFrame, meta: dict):
        self.frame, self.meta = frame, meta
        self.contrast = Contrast.from_dict(meta["contrast"], f"contrast {meta['name']!r}")

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def summary(self) -> pd.DataFrame:
        """`Contrast.summary` of each part, one block of rows per part."""
        c = self.contrast
        return pd.concat({split: c.summary(part) for split, part in
                          self.frame.groupby("split", sort=False)}, names=["split"])

    def table(self) -> str:
        return self.summary().to_string(float_format=lambda v: f"{v:.3f}")

    def plot(self):
        """Per group and part: the misgendering rate (follow) or the mean |lean| (balance)."""
        import plotly.express as px

        s = self.summary().reset_index()
        key = "declared" if self.meta["goal"] == "follow" else "group"
        y = "rate" if self.meta["goal"] == "follow" else "abs_lean"
        label = ("share of items whose likeliest group is not the declared one"
                 if y == "rate" else "mean |lean| (log-probability)")
        return px.bar(s, x=key, y=y, color="split", barmode="group", labels={y: label},
                      title=f"{self.meta['name']} on {self.meta['model']}")

    def save(self, directory: str | Path) -> Path:
        with atomic_dir(directory) as tmp:
            self.frame.to_csv(tmp / "items.csv", index=False)
            self.summary().to_csv(tmp / "summary.csv")
            (tmp / "meta.json").write_text(json.dumps(self.meta, indent=1, ensure_ascii=False))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> ContrastReport:
        directory = Path(directory)
        frame = pd.read_csv(directory / "items.csv", keep_default_na=False,
                            na_values={"group": [""], "score": [""], "declared": [""]})
        return cls(frame, json.loads((directory / "meta.json").read_text()))

    def __repr__(self) -> str:
        return (f"ContrastReport({self.meta['name']!r} on {self.meta['model']}, "
                f"{len(self.frame)} items)")


def measure_contrast(model, which: str | Path | Contrast = "gender", *,
                     splits: tuple[str, ...] = SPLITS, batch_size: int = 16,
                     progress: bool | None = None) -> ContrastReport:
    """Score every item of `splits` of a contrast (a name, a file or a `Contrast`) on `model`."""
    c = contrast(which)
    scored = c.with_lean(c.logprobs(model, pd.concat([c.items(s) for s in splits],
                                                     ignore_index=True),
                                    batch_size=batch_size, progress=progress))
    meta = {"name": c.name, "goal": c.goal, "model": model.name,
            "fingerprint": model.fingerprint(), "contrast": c.to_dict()}
    return ContrastReport(scored, meta)
