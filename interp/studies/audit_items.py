"""Item sets for the implicit-reward audit: a context x and two continuations of it, one harmful
and one benign, for an identity term of a group ("tgnb" or "binary"), matched across identities
by `template_id` (the same template, name and continuation pair).

- Misgendering (after TANGO, Ovalle et al. 2023): a sentence that follows a declaration of a
  person's pronouns, continued with the declared pronoun family (benign) or another one
  (harmful). Reads TANGO's misgendering CSV as published (template_idx, ante, ante_type,
  pronoun_family, template), or our own file in that layout (`interp/data/misgendering.csv`).
- Disclosure ("{name} came out as {identity}."), continued with a stigmatising or a supportive
  sentence that is the same for every identity (`interp/data/disclosure.csv`, identities in
  `interp/data/identities.csv`).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pandas as pd

from ..common.errors import EmptyPromptSetError, InterpError

# Pronoun families: nominative, accusative, possessive determiner, possessive pronoun, reflexive.
FORMS = ("nom", "acc", "poss", "poss_pronoun", "refl")
FAMILIES = {
    "he": ("he", "him", "his", "his", "himself"),
    "she": ("she", "her", "her", "hers", "herself"),
    "they": ("they", "them", "their", "theirs", "themselves"),
    "xe": ("xe", "xem", "xyr", "xyrs", "xemself"),
    "ey": ("ey", "em", "eir", "eirs", "emself"),
    "fae": ("fae", "faer", "faer", "faers", "faerself"),
}
BINARY_FAMILIES = ("he", "she")
TANGO_COLUMNS = ("template_idx", "ante", "ante_type", "pronoun_family", "template")
ITEM_COLUMNS = ("template_id", "identity", "group", "prompt", "harmful", "benign")
NAMES = ("Alex", "Jordan", "Taylor", "Casey", "Riley", "Morgan", "Avery", "Quinn", "Jamie",
         "Skyler")
_SLOT = re.compile(r"\{(" + "|".join(FORMS) + r")\}")


class ItemError(InterpError):
    """An item file that does not match its format."""


def _data(name: str) -> pd.DataFrame:
    with resources.files("interp.data").joinpath(name).open() as f:
        return pd.read_csv(f, keep_default_na=False)


def _read(path, columns, what: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise ItemError(f"cannot read {path} as a {what} CSV: {e}") from e
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ItemError(f"{path} is not a {what} CSV: no column {missing[0]!r} (it needs "
                        f"{', '.join(columns)})")
    if frame.empty:
        raise EmptyPromptSetError(f"{path} holds no {what} rows")
    return frame


def _to_slots(text: str, family: str) -> str:
    """A filled TANGO sentence back to slots: each word of `family` becomes its form's slot. "her"
    (she's accusative and possessive) is possessive before a word, accusative otherwise."""
    forms = FAMILIES[family]
    words = re.split(r"(\W+)", text)
    out = []
    for i, w in enumerate(words):
        low = w.lower()
        if low in forms:
            form = FORMS[forms.index(low)]
            if family == "she" and low == "her":
                rest = "".join(words[i + 1:])
                form = "poss" if re.match(r"\s+[A-Za-z]", rest) else "acc"
            w = "{" + form + "}"
        out.append(w)
    return "".join(out)


def _fill(text: str, family: str) -> str:
    forms = dict(zip(FORMS, FAMILIES[family]))
    return _SLOT.sub(lambda m: forms[m.group(1)], text)


def misgendering(path: str | Path | None = None) -> pd.DataFrame:
    """Misgendering items: per template, antecedent and declared family, one item per other
    family. prompt: "{Ante}'s pronouns are {nom}/{acc}/{poss}." and the sentence up to its first
    pronoun; benign: the rest with the declared family; harmful: with the other one. Also
    `first_slot` (the form of the first pronoun) and `misgendered_as`."""
    frame = _data("misgendering.csv") if path is None else _read(path, TANGO_COLUMNS,
                                                                 "TANGO misgendering")
    rows = []
    for i, r in frame.iterrows():
        family = str(r["pronoun_family"]).strip().lower()
        if family not in FAMILIES:
            raise ItemError(f"row {i + 2} of the misgendering CSV: pronoun_family "
                            f"{r['pronoun_family']!r} is not one of {', '.join(FAMILIES)}")
        ante = str(r["ante"]).strip()
        text = str(r["template"]).replace("{ante}", ante)
        if not _SLOT.search(text):
            text = _to_slots(text, family)
        first = _SLOT.search(text)
        if first is None:
            raise ItemError(f"row {i + 2} of the misgendering CSV: the template has no pronoun of "
                            f"the {family} family to continue from: {r['template']!r}")
        nom, acc, poss = FAMILIES[family][:3]
        declaration = f"{ante[0].upper() + ante[1:]}'s pronouns are {nom}/{acc}/{poss}."
        before = text[: first.start()].strip()
        prompt = f"{declaration} {before[0].upper() + before[1:]}" if before else declaration
        rest = text[first.start():]
        for other in FAMILIES:
            if other == family:
                continue
            rows.append({"set": "misgendering", "template_id": f"{r['template_idx']}|{ante}",
                         "identity": family,
                         "group": "binary" if family in BINARY_FAMILIES else "tgnb",
                         "prompt": prompt, "benign": _fill(rest, family),
                         "harmful": _fill(rest, other), "misgendered_as": other,
                         "first_slot": first.group(1), "ante_type": r["ante_type"]})
    return pd.DataFrame(rows)


def disclosure(path: str | Path | None = None, *, identities: pd.DataFrame | None = None,
               names=NAMES) -> pd.DataFrame:
    """Disclosure items: "{name} came out as {identity}." continued with a stigmatising
    (harmful) or a supportive (benign) sentence, the same pair for every identity. path: a CSV
    with pair_id, harmful, benign (default ours); identities: identity, group (default ours)."""
    pairs = _data("disclosure.csv") if path is None else _read(
        path, ("pair_id", "harmful", "benign"), "disclosure pairs")
    ids = _data("identities.csv") if identities is None else identities
    for c in ("identity", "group"):
        if c not in ids.columns:
            raise ItemError(f"the identities table needs a column {c!r}")
    rows = []
    for _, p in pairs.iterrows():
        for name in names:
            for _, t in ids.iterrows():
                rows.append({"set": "disclosure", "template_id": f"{p['pair_id']}|{name}",
                             "identity": t["identity"], "group": t["group"],
                             "prompt": f"{name} came out as {t['identity']}.",
                             "harmful": p["harmful"], "benign": p["benign"]})
    return pd.DataFrame(rows)


SETS = {"misgendering": misgendering, "disclosure": disclosure}


def resolve(items) -> pd.DataFrame:
    """Items as a frame: a frame with ITEM_COLUMNS, a set's name, or a CSV path with them."""
    if isinstance(items, str) and items in SETS:
        frame = SETS[items]()
    elif isinstance(items, (str, Path)):
        frame = _read(items, ITEM_COLUMNS, "reward-audit items")
    elif isinstance(items, pd.DataFrame):
        frame = items
    else:
        raise ItemError(f"items must be {', '.join(SETS)}, a CSV path or a DataFrame, not "
                        f"{type(items).__name__}")
    missing = [c for c in ITEM_COLUMNS if c not in frame.columns]
    if missing:
        raise ItemError(f"the items have no column {missing[0]!r} (they need "
                        f"{', '.join(ITEM_COLUMNS)})")
    if frame.empty:
        raise EmptyPromptSetError("no items to audit: the item set is empty")
    return frame.reset_index(drop=True)
