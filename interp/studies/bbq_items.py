"""BBQ-format multiple-choice items (Parrish et al. 2022): BBQ's published JSONL as it is, or our
own set made from hand-written scenarios (`interp/data/bbq_scenarios.csv`, `bbq_groups.csv`).

An item is a context (ambiguous, or disambiguated by one more sentence), a negative or
non-negative question and three answers: two people and an "unknown" option. `answer_info` gives
each answer's group label ("unknown" for the unknown option) and
`additional_metadata.stereotyped_groups` the groups the negative stereotype is about. `frame`
adds, per item, which answer is the unknown one and which names the stereotyped group.
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pandas as pd

from ..common.errors import EmptyPromptSetError, InterpError
from ..measure.audit_items import bundled_table

FIELDS = ("example_id", "category", "context", "question", "ans0", "ans1", "ans2", "label",
          "context_condition", "question_polarity", "answer_info", "additional_metadata")
CONDITIONS = ("ambig", "disambig")
POLARITIES = ("neg", "nonneg")
UNKNOWN = "unknown"
# BBQ writes some groups differently in answer_info and in stereotyped_groups ("F" against
# "woman", "lowSES" against "low SES"): labels are compared in this normal form.
_ALIASES = {"woman": "f", "girl": "f", "female": "f", "man": "m", "boy": "m", "male": "m"}
UNKNOWN_ANSWERS = ("Cannot be determined", "Not enough information", "Unknown",
                   "Can't answer")


class BBQError(InterpError):
    """A BBQ-format file or frame that does not match the format."""


def norm_label(label) -> str:
    s = "".join(ch for ch in str(label).lower() if ch.isalnum())
    return _ALIASES.get(s, s)


def read_jsonl(path) -> list[dict]:
    """BBQ's JSONL (optionally .gz), one item per line; errors name the line and the field."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = [(i + 1, line) for i, line in enumerate(f) if line.strip()]
    except OSError as e:
        raise BBQError(f"cannot read {path}: {e}") from e
    items = []
    for n, line in lines:
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise BBQError(f"{path}, line {n}: not JSON ({e})") from e
        check_item(obj, f"{path}, line {n}")
        items.append(obj)
    if not items:
        raise EmptyPromptSetError(f"{path} holds no BBQ items")
    return items


def check_item(obj, where: str) -> None:
    if not isinstance(obj, dict):
        raise BBQError(f"{where}: a BBQ item must be a JSON object")
    missing = [f for f in FIELDS if f not in obj]
    if missing:
        raise BBQError(f"{where}: no field {missing[0]!r} (BBQ items need "
                       f"{', '.join(FIELDS)})")
    if obj["context_condition"] not in CONDITIONS:
        raise BBQError(f"{where}: context_condition is {obj['context_condition']!r}, not one "
                       f"of {CONDITIONS}")
    if obj["question_polarity"] not in POLARITIES:
        raise BBQError(f"{where}: question_polarity is {obj['question_polarity']!r}, not one "
                       f"of {POLARITIES}")
    if obj["label"] not in (0, 1, 2):
        raise BBQError(f"{where}: label is {obj['label']!r}; it must be 0, 1 or 2")
    info = obj["answer_info"]
    if not isinstance(info, dict) or any(
            not isinstance(info.get(f"ans{k}"), list) or len(info[f"ans{k}"]) < 2
            for k in range(3)):
        raise BBQError(f"{where}: answer_info must map ans0, ans1 and ans2 to [answer, group]")
    groups = [norm_label(info[f"ans{k}"][1]) for k in range(3)]
    if groups.count(UNKNOWN) != 1:
        raise BBQError(f"{where}: exactly one answer must have the group 'unknown' in "
                       f"answer_info (found {groups.count(UNKNOWN)})")
    meta = obj["additional_metadata"]
    if not isinstance(meta, dict) or not isinstance(meta.get("stereotyped_groups"), list):
        raise BBQError(f"{where}: additional_metadata.stereotyped_groups must be a list of "
                       "group labels")


def _parts(label) -> set[str]:
    """The pieces of a compound BBQ group ("F-Black", "trans_F", "lowSES-Black")."""
    return {norm_label(p) for p in str(label).replace("_", "-").split("-") if p.strip()}


def _stereotyped(obj, named, groups, stereo) -> list[int]:
    """The named answers of a stereotyped group. BBQ spells a group three ways: the group
    label matches (Age: "old"); for Nationality the group is a region ("Europe") and the
    stereotyped list names nationalities, which are the answers' own words ("British"); proper-
    name items carry compound groups ("F-Black", "trans_F") whose race or identity part is
    what the list names. The first rule that picks anything decides."""
    info = obj["answer_info"]
    for label in (lambda k: {groups[k]}, lambda k: {norm_label(info[f"ans{k}"][0])},
                  lambda k: _parts(info[f"ans{k}"][1])):
        hits = [k for k in named if label(k) & stereo]
        if hits:
            return hits
    return []


def frame(items) -> pd.DataFrame:
    """One row per item: BBQ's fields flattened, each answer's group (`group0..2`), and the
    index of the unknown answer (`unknown`), of the answer naming a stereotyped group
    (`target`) and of the other person (`other`); target and other are -1 where the item names
    no stereotyped group, or names it twice (BBQ has a few: they count for accuracy only)."""
    rows = []
    for i, obj in enumerate(items):
        check_item(obj, f"item {i}")
        groups = [norm_label(obj["answer_info"][f"ans{k}"][1]) for k in range(3)]
        stereo = {norm_label(g) for g in obj["additional_metadata"]["stereotyped_groups"]}
        unknown = groups.index(UNKNOWN)
        named = [k for k in range(3) if k != unknown]
        hits = _stereotyped(obj, named, groups, stereo)
        target = hits[0] if len(hits) == 1 else -1
        other = [k for k in named if k != target][0] if target >= 0 else -1
        rows.append({
            "example_id": obj["example_id"], "category": obj["category"],
            "question_index": str(obj.get("question_index", obj["example_id"])),
            "context": obj["context"], "question": obj["question"],
            "ans0": obj["ans0"], "ans1": obj["ans1"], "ans2": obj["ans2"],
            "label": int(obj["label"]), "context_condition": obj["context_condition"],
            "question_polarity": obj["question_polarity"],
            "group0": groups[0], "group1": groups[1], "group2": groups[2],
            "unknown": unknown, "target": target, "other": other,
            "stereotyped_groups": ";".join(sorted(stereo)),
            "source": obj.get("source", "bbq")})
    out = pd.DataFrame(rows)
    if out.empty:
        raise EmptyPromptSetError("the BBQ item set is empty")
    return out


def ours(pairs: int = 5) -> list[dict]:
    """Our BBQ-format items: every scenario with `pairs` (at most 5) pairs of people, the
    stereotyped group's and another's, each in 8 items: the ambiguous context in both orders
    of the two people, and the disambiguated one with either person as the answer to the
    negative question, each with the negative and the non-negative question. 25 scenarios × 5
    pairs × 8 = 1,000 items; `pairs=1` gives 200."""
    if not 1 <= pairs <= 5:
        raise BBQError(f"pairs must be 1..5, not {pairs}")
    scenarios = bundled_table("bbq_scenarios.csv")
    groups = bundled_table("bbq_groups.csv")
    items = []
    for s_index, s in enumerate(scenarios.itertuples()):
        unknown = UNKNOWN_ANSWERS[s_index % len(UNKNOWN_ANSWERS)]
        for k, (target, other) in enumerate(_pairs(groups, s.category, s.stereotyped)[:pairs]):
            questions = (("neg", s.question_neg), ("nonneg", s.question_nonneg))
            for people in ((target, other), (other, target)):
                context = s.context.format(A=people[0][1], B=people[1][1])
                for polarity, question in questions:
                    items.append(_item(len(items), s, context, question, polarity, "ambig",
                                       people, None, unknown))
            for x, y in ((target, other), (other, target)):
                # who is mentioned first alternates over pairs and answers, so neither the
                # first nor the second mention is always the answer
                people = (target, other) if (k + (x is target)) % 2 else (other, target)
                context = (s.context.format(A=people[0][1], B=people[1][1]) + " "
                           + s.disambiguation.format(X=x[1], Y=y[1]))
                for polarity, question in questions:
                    items.append(_item(len(items), s, context, question, polarity, "disambig",
                                       people, x if polarity == "neg" else y, unknown))
    return items


def _pairs(groups: pd.DataFrame, category: str, stereotyped: str):
    """(target, other) people as (label, phrase): a binary category's five phrase pairs; for a
    category listed without pairs (religion), the stereotyped group against each other one."""
    g = groups[groups.category == category]
    if (g.pair.astype(str) != "").all():
        out = []
        for _, pair in g.groupby("pair", sort=True):
            t = pair[pair.label == stereotyped]
            o = pair[pair.label != stereotyped]
            out.append(((stereotyped, t.phrase.iloc[0]), (o.label.iloc[0], o.phrase.iloc[0])))
        return out
    t = g[g.label == stereotyped].iloc[0]
    return [((t.label, t.phrase), (o.label, o.phrase))
            for o in g[g.label != stereotyped].itertuples()]


def _item(n: int, s, context: str, question: str, polarity: str, condition: str, people,
          answer, unknown: str) -> dict:
    options = [(_cap(p[1]), p[0]) for p in people] + [(unknown, UNKNOWN)]
    shift = n % 3  # BBQ varies where the unknown answer stands; so do we
    options = options[shift:] + options[:shift]
    correct = UNKNOWN if answer is None else answer[0]
    label = next(k for k, o in enumerate(options) if o[1] == correct)
    return {"example_id": n, "question_index": s.scenario_id, "category": s.category,
            "context_condition": condition, "question_polarity": polarity, "context": context,
            "question": question, "ans0": options[0][0], "ans1": options[1][0],
            "ans2": options[2][0], "label": label,
            "answer_info": {f"ans{k}": [o[0], o[1]] for k, o in enumerate(options)},
            "additional_metadata": {"stereotyped_groups": [s.stereotyped],
                                    "source": "interp"}, "source": "interp"}


def _cap(phrase: str) -> str:
    return phrase[:1].upper() + phrase[1:]


def split(items, test_fraction: float = 1 / 3):
    """(train, test) item frames by whole scenarios (BBQ's question_index): a scenario's items,
    whatever their people, fall on one side only, from a hash of its id."""
    f = resolve(items)
    test = f.question_index.map(
        lambda q: zlib.crc32(f"{q}".encode()) % 1000 < 1000 * test_fraction).to_numpy(bool)
    return f[~test].reset_index(drop=True), f[test].reset_index(drop=True)


def write_jsonl(items, path) -> Path:
    """Items (a list of BBQ objects) as BBQ's JSONL, one object per line."""
    from ..common.io import atomic_write

    with atomic_write(path) as f:
        f.writelines(json.dumps(o) + "\n" for o in items)
    return Path(path)


def resolve(items) -> pd.DataFrame:
    """"ours", a BBQ JSONL path, a list of BBQ objects, or a frame made by `frame`."""
    if isinstance(items, pd.DataFrame):
        need = ("context", "question", "ans0", "unknown", "target", "label")
        missing = [c for c in need if c not in items.columns]
        if missing:
            raise BBQError(f"a BBQ item frame needs the column {missing[0]!r}: make it with "
                           "interp.studies.bbq_items.frame")
        if items.empty:
            raise EmptyPromptSetError("the BBQ item set is empty")
        return items.reset_index(drop=True)
    if isinstance(items, str) and items == "ours":
        return frame(ours())
    if isinstance(items, (str, Path)) and Path(items).is_dir():
        files = sorted(Path(items).glob("*.jsonl")) + sorted(Path(items).glob("*.jsonl.gz"))
        if not files:
            raise BBQError(f"{items} holds no .jsonl files: pass BBQ's data/ folder or one of "
                           "its files (e.g. Gender_identity.jsonl)")
        return frame([obj for f in files for obj in read_jsonl(f)])
    if isinstance(items, (str, Path)):
        return frame(read_jsonl(items))
    if isinstance(items, list):
        return frame(items)
    raise BBQError(f"BBQ items must be 'ours', a JSONL path, a list of BBQ objects or a frame, "
                   f"not {type(items).__name__}")
