"""Bias prompt sets: occupations with gender scores, templates, and the `PromptSet` type.

A `Prompt` knows its text, its token ids under one model's tokenizer, and the token span of its
subject (the occupation), so tracing can corrupt the subject and editing can read its last token.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ..common.errors import EmptyPromptSetError, InterpError, TemplateError
from ..common.io import atomic_write

# Our templates, in the style of the causal-mediation literature: the subject slot is followed by
# a verb and a clause opener, so the next token is naturally a subject pronoun.
TEMPLATES: tuple[str, ...] = (
    "The {} said that",
    "The {} was promoted because",
    "The {} was fired because",
    "The {} left early because",
    "The {} apologized because",
    "The {} explained that",
    "The {} told the client that",
    "The {} was late today because",
    "The {} could not sleep because",
    "The {} answered the phone and said that",
    "After the meeting, the {} said that",
    "The {} wrote in the report that",
    "The {} was praised because",
    "The {} quit the job because",
    "Yesterday the {} announced that",
    "The {} stayed late at work because",
    "The {} smiled because",
    "The {} called home and said that",
)

# Contexts where the next word is an object or a possessive pronoun (him/her, his/her), with the
# occupation as the sentence's subject: an edit fitted on these as well as `TEMPLATES` balances
# the pronoun an occupation takes in more of the places it can take one. None is a frame of the
# held-out shapes (`measure.shapes`), whose object slots put the occupation in the object.
CONTEXT_TEMPLATES: dict[str, str] = {
    "The {} was sick, so the team sent": "object",
    "The {} won the award, and the mayor congratulated": "object",
    "The {} looked lost, so a stranger helped": "object",
    "The {} was late again, and the boss warned": "object",
    "The {} asked for help, so a colleague showed": "object",
    "The {} retired last year, and everyone still misses": "object",
    "The {} brushed": "possessive",
    "The {} shook": "possessive",
    "The {} raised": "possessive",
    "The {} washed": "possessive",
    "The {} adjusted": "possessive",
    "The {} drove to work in": "possessive",
}

GENDER_NEUTRAL_MAX = 0.3  # |definitional| at most this: the pronoun is not settled by meaning
TEST_FRACTION = 0.25
SPLIT_SEED = 0


@dataclass(frozen=True)
class Prompt:
    """One prompt, tokenized. `subject_span` is [start, end) in token positions."""

    text: str
    subject: str
    input_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    subject_span: tuple[int, int]
    template: str | None = None
    stereotypical: float | None = None  # Bolukbasi et al. scale, + = male-stereotyped
    definitional: float | None = None  # + = male by meaning
    expected: str | None = None  # "male"/"female" when the pronoun is fixed by meaning
    split: str | None = None
    corrupt_text: str | None = None
    slot: str = "subject"  # the pronoun the next token is: subject (he/she), object, possessive
    group: str | None = None  # a contrast's group the subject is stereotyped with
    declared: str | None = None  # a contrast's group declared earlier in the text

    @property
    def last(self) -> int:
        """Position of the last token, where the next-token distribution is read."""
        return len(self.input_ids) - 1

    @property
    def subject_last(self) -> int:
        """Position of the subject's last token (the LSDM key position)."""
        return self.subject_span[1] - 1


@dataclass(frozen=True)
class Dropped:
    text: str
    subject: str
    reason: str


class PromptSet(Sequence):
    """An ordered collection of prompts tokenized for one model, plus what was dropped and why."""

    def __init__(self, prompts: Iterable[Prompt], *, name: str = "prompts",
                 dropped: Iterable[Dropped] = ()):
        self.prompts: list[Prompt] = list(prompts)
        self.name = name
        self.dropped: list[Dropped] = list(dropped)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return PromptSet(self.prompts[i], name=self.name, dropped=self.dropped)
        return self.prompts[i]

    def __repr__(self) -> str:
        subjects = len({p.subject for p in self.prompts})
        text = f"PromptSet({self.name!r}: {len(self)} prompts, {subjects} subjects"
        if self.dropped:
            text += f"; {self.drop_summary()}"
        return text + ")"

    def drop_summary(self) -> str:
        """One readable line: how many prompts were dropped, for which reasons."""
        if not self.dropped:
            return "nothing dropped"
        counts = Counter(d.reason for d in self.dropped)
        parts = [f"{n} × {reason}" for reason, n in counts.most_common()]
        return f"dropped {len(self.dropped)}: " + "; ".join(parts)

    def of_slot(self, slot: str) -> "PromptSet":
        """The prompts whose next word is a pronoun of this slot (subject, object, possessive);
        the whole set where none is (a trace scores he/she, so it wants the subject ones)."""
        chosen = [p for p in self.prompts if p.slot == slot]
        return PromptSet(chosen, name=self.name, dropped=self.dropped) if chosen else self

    def require_nonempty(self) -> "PromptSet":
        if not self.prompts:
            why = f" ({self.drop_summary()})" if self.dropped else ""
            raise EmptyPromptSetError(
                f"prompt set {self.name!r} is empty{why}: pass other subjects or templates, or "
                "check that the subjects occur in the texts on token boundaries"
            )
        return self

    def filter(self, keep) -> "PromptSet":
        return PromptSet([p for p in self.prompts if keep(p)], name=self.name, dropped=self.dropped)

    def subjects(self) -> list[str]:
        return list(dict.fromkeys(p.subject for p in self.prompts))

    def to_frame(self) -> pd.DataFrame:
        rows = []
        for i, p in enumerate(self.prompts):
            row = asdict(p)
            row.update(prompt_id=i, n_tokens=len(p.input_ids), subject_start=p.subject_span[0],
                       subject_end=p.subject_span[1])
            rows.append(row)
        return pd.DataFrame(rows).drop(columns=["subject_span"]) if rows else pd.DataFrame()

    def save_jsonl(self, path: str | Path) -> None:
        """Write text, subject and metadata (not token ids: they belong to one tokenizer)."""
        keep = ("text", "subject", "template", "stereotypical", "definitional", "expected",
                "split", "corrupt_text", "slot", "group", "declared")
        with atomic_write(path) as f:
            for p in self.prompts:
                row = {k: getattr(p, k) for k in keep if getattr(p, k) is not None
                       and not (k == "slot" and p.slot == "subject")}
                f.write(json.dumps(row) + "\n")


# ---------------------------------------------------------------------------------------------
# Tokenizing one prompt


def tokenize_prompt(tokenizer, text: str, subject: str, *, subject_start: int | None = None,
                    **meta) -> Prompt | Dropped:
    """Tokenize `text` and locate `subject` in it, or say why the prompt cannot be used."""
    if not text.strip():
        return Dropped(text, subject, "empty text")
    if not subject.strip():
        return Dropped(text, subject, "empty subject")
    start = text.find(subject) if subject_start is None else subject_start
    if start < 0 or text[start : start + len(subject)] != subject:
        return Dropped(text, subject, "subject not found in the text")
    end = start + len(subject)
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    covered = [i for i, (a, b) in enumerate(offsets) if b > a and b > start and a < end]
    if not covered:
        return Dropped(text, subject, "subject covers no token")
    first, last = covered[0], covered[-1]
    # A token may carry the space before the subject (" nurse"), but nothing else outside it.
    before = text[offsets[first][0] : start]
    if before.strip() or offsets[last][1] != end:
        return Dropped(text, subject, "subject does not start and end on token boundaries")
    tokens = tuple(tokenizer.decode([i]) for i in ids)
    return Prompt(text=text, subject=subject, input_ids=tuple(ids), tokens=tokens,
                  subject_span=(first, last + 1), **meta)


def check_template(template: str) -> None:
    slots = template.count("{}")
    if slots != 1:
        what = "no '{}' slot" if slots == 0 else f"{slots} '{{}}' slots"
        raise TemplateError(
            f"template {template!r} has {what}; it needs exactly one, where the subject goes, "
            "e.g. 'The {} said that'"
        )
    if template != template.rstrip():
        raise TemplateError(
            f"template {template!r} ends with whitespace; remove it: the candidate tokens "
            "(' he', ' she') carry their own leading space"
        )


def from_templates(model_or_tokenizer, templates: Sequence[str], subjects: Iterable[dict | str],
                   *, name: str = "prompts", slots: Mapping[str, str] | None = None) -> PromptSet:
    """Fill every template with every subject. A subject is a word or a dict with key `subject`
    plus any `Prompt` metadata (stereotypical, definitional, expected, split). slots: the
    pronoun slot of templates whose next word is not a subject pronoun ({template: "object"
    or "possessive"})."""
    tokenizer = _tokenizer(model_or_tokenizer)
    for t in templates:
        check_template(t)
    prompts, dropped = [], []
    for s in subjects:
        meta = {"subject": s} if isinstance(s, str) else dict(s)
        subject = meta.pop("subject")
        for t in templates:
            slot = t.index("{}")
            text = t[:slot] + subject + t[slot + 2 :]
            result = tokenize_prompt(tokenizer, text, subject, subject_start=slot, template=t,
                                     slot=(slots or {}).get(t, "subject"), **meta)
            (dropped if isinstance(result, Dropped) else prompts).append(result)
    return PromptSet(prompts, name=name, dropped=dropped)


def from_records(model_or_tokenizer, records: Iterable[dict], *, name: str = "prompts") -> PromptSet:
    """Prompts from dicts with `text` and `subject` (and optional metadata, e.g. `corrupt_text`)."""
    tokenizer = _tokenizer(model_or_tokenizer)
    allowed = {"template", "stereotypical", "definitional", "expected", "split", "corrupt_text",
               "slot", "group", "declared"}
    prompts, dropped = [], []
    for n, r in enumerate(records, 1):
        if "text" not in r or "subject" not in r:
            raise InterpError(f"record {n} needs the keys 'text' and 'subject'; it has {sorted(r)}")
        meta = {k: v for k, v in r.items() if k in allowed}
        result = tokenize_prompt(tokenizer, r["text"], r["subject"], **meta)
        (dropped if isinstance(result, Dropped) else prompts).append(result)
    return PromptSet(prompts, name=name, dropped=dropped)


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a prompt JSONL file, checked line by line without a model: each non-blank
    line one JSON object with string `text` and `subject`. Errors name the file and line."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise InterpError(f"{path}: no such file; pass a JSONL file with 'text' and 'subject' "
                          "on each line, or a built-in set (train, test, all, definitional)") from None
    except IsADirectoryError:
        raise InterpError(f"{path} is a directory, not a JSONL file of prompts") from None
    except UnicodeDecodeError as e:
        raise InterpError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): pass a "
                          "JSONL file of prompts") from None
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise InterpError(f"{path}:{n} is not valid JSON ({e.msg}, column {e.colno}): each "
                              "line must be one object such as {\"text\": \"The nurse said "
                              "that\", \"subject\": \"nurse\"}") from None
        if not isinstance(r, dict):
            raise InterpError(f"{path}:{n} is a JSON {type(r).__name__}, not an object with "
                              "'text' and 'subject'")
        for key in ("text", "subject"):
            if not isinstance(r.get(key), str):
                what = "has no" if key not in r else "has a non-string"
                raise InterpError(f"{path}:{n} {what} {key!r}: each line needs 'text' and "
                                  f"'subject' strings (it has {', '.join(sorted(r)) or 'none'})")
        records.append(r)
    if not records:
        raise InterpError(f"{path} holds no prompts: write one JSON object per line with "
                          "'text' and 'subject'")
    return records


def from_jsonl(model_or_tokenizer, path: str | Path) -> PromptSet:
    """Prompts from a JSONL file with one object per line: `text`, `subject`, optional metadata."""
    return from_records(model_or_tokenizer, read_jsonl(path), name=Path(path).stem)


# ---------------------------------------------------------------------------------------------
# The bundled occupation and definitional sets


def occupations(*, neutral_only: bool = True, single_word: bool = True, split: str | None = None,
                seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION) -> pd.DataFrame:
    """The bundled occupation table (see interp/data/README.md), with derived columns
    `gender_neutral`, `single_word` and `split`. Filters: by default the gender-neutral
    single-word occupations of both splits."""
    with resources.files("interp.data").joinpath("occupations.csv").open() as f:
        df = pd.read_csv(f)
    df["gender_neutral"] = df["definitional"].abs() <= GENDER_NEUTRAL_MAX
    df["single_word"] = ~df["occupation"].str.contains(" ")
    df["split"] = [split_of(o, seed, test_fraction) for o in df["occupation"]]
    if neutral_only:
        df = df[df["gender_neutral"]]
    if single_word:
        df = df[df["single_word"]]
    if split is not None:
        check_split(split)
        df = df[df["split"] == split]
    return df.reset_index(drop=True)


def check_split(split: str) -> None:
    """Refuse a split that is not 'train' or 'test'."""
    if split not in ("train", "test"):
        raise InterpError(f"split must be 'train', 'test' or None, not {split!r}")


def split_of(word: str, seed: int = SPLIT_SEED, test_fraction: float = TEST_FRACTION) -> str:
    """Train or test, from a seeded hash of the word: fixed, and independent of the other rows."""
    digest = hashlib.sha256(f"{seed}:{word}".encode()).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2**64 < test_fraction else "train"


def professions(model_or_tokenizer, split: str | None = "train", *,
                templates: Sequence[str] = TEMPLATES, neutral_only: bool = True,
                single_word: bool = True, seed: int = SPLIT_SEED,
                slots: Mapping[str, str] | None = None) -> PromptSet:
    """Occupation prompts ("The nurse said that") with their stereotype scores. slots: the
    pronoun slot of templates whose next word is an object or possessive (`from_templates`)."""
    df = occupations(neutral_only=neutral_only, single_word=single_word, split=split, seed=seed)
    subjects = [
        {"subject": r.occupation, "stereotypical": float(r.stereotypical),
         "definitional": float(r.definitional), "split": r.split}
        for r in df.itertuples()
    ]
    return from_templates(model_or_tokenizer, templates, subjects,
                          name=f"professions-{split or 'all'}", slots=slots)


def contexts(model_or_tokenizer, split: str | None = "train", **kw) -> PromptSet:
    """Occupation prompts in every context we fit on: `TEMPLATES` (subject pronoun next) and
    `CONTEXT_TEMPLATES` (object or possessive pronoun next), each prompt knowing its slot."""
    templates = (*TEMPLATES, *CONTEXT_TEMPLATES)
    ps = professions(model_or_tokenizer, split, templates=templates, slots=CONTEXT_TEMPLATES,
                     **kw)
    ps.name = f"contexts-{split or 'all'}"
    return ps


def definitional(model_or_tokenizer, *, templates: Sequence[str] = TEMPLATES,
                 split: str | None = None, seed: int = SPLIT_SEED,
                 slots: Mapping[str, str] | None = None) -> PromptSet:
    """Prompts whose subject fixes the pronoun ("The king said that" → he); debiasing must keep
    them right. split: "train" or "test" words only (the same seeded hash as the occupations),
    so an edit can preserve some words and be checked on the others."""
    with resources.files("interp.data").joinpath("definitional.csv").open() as f:
        df = pd.read_csv(f)
    if split is not None:
        check_split(split)
        df = df[[split_of(w, seed) == split for w in df["word"]]]
    subjects = [
        {"subject": r.word, "expected": r.gender, "definitional": 1.0 if r.gender == "male" else -1.0,
         "stereotypical": 0.0, "split": split_of(r.word, seed)}
        for r in df.itertuples()
    ]
    return from_templates(model_or_tokenizer, templates, subjects, slots=slots,
                          name="definitional" if split is None else f"definitional-{split}")


# The prompt sets a command line, a sweep config or a notebook can name (`named`).
BUILTIN_SETS = ("train", "test", "all", "contexts", "definitional", "definitional-train",
                "definitional-test")


def named(model_or_tokenizer, name: str, *, templates: Sequence[str] | None = None) -> PromptSet:
    """The prompt set called `name`: a built-in (`BUILTIN_SETS`: the train, test or all
    occupations in `templates`; "contexts", the train occupations in every fitting context with
    their slots; "definitional", or its train or test words, in `templates`) or a JSONL file
    with `text` and `subject` on each line. templates: None for every built-in template."""
    chosen = TEMPLATES if templates is None else templates
    if name in ("definitional", "definitional-train", "definitional-test"):
        return definitional(model_or_tokenizer, templates=chosen,
                            split=name.partition("-")[2] or None)
    if name in ("train", "test", "all"):
        return professions(model_or_tokenizer, None if name == "all" else name,
                           templates=chosen)
    if name == "contexts":
        return contexts(model_or_tokenizer, "train")
    if Path(name).expanduser().is_file():
        return from_jsonl(model_or_tokenizer, Path(name).expanduser())
    raise InterpError(f"unknown prompt set {name!r}: use {', '.join(BUILTIN_SETS)} or a JSONL "
                      "file with 'text' and 'subject' on each line")


def _tokenizer(model_or_tokenizer):
    return getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)


def pick(prompt_set: PromptSet, limit: int | None, seed: int) -> PromptSet:
    """At most `limit` prompts, a seeded sample spread over the set (the whole set when `limit`
    is None or not smaller than it)."""
    if not limit or limit >= len(prompt_set):
        return prompt_set
    idx = sorted(np.random.default_rng(seed).choice(len(prompt_set), limit, replace=False))
    return PromptSet([prompt_set[int(i)] for i in idx], name=prompt_set.name,
                     dropped=prompt_set.dropped)
