"""Gendered pronouns and their opposite-gender forms (he<->she, him<->her, his<->her(s)).
"""

from __future__ import annotations

import re

from .errors import SuiteError

PRONOUN_GENDER = {"he": "male", "him": "male", "his": "male", "himself": "male",
                  "she": "female", "her": "female", "hers": "female", "herself": "female"}

_SWAP = {"he": "she", "him": "her", "himself": "herself", "she": "he", "hers": "his",
         "herself": "himself"}


# Words that follow an object "her" (her -> him), not a possessive one (her idea -> his idea).
_OBJECT_FOLLOWERS = frozenset("""
a an the this that these those some any all each every no not never always to for from with about
of in on at by into onto over under up down out off away back again too as and or but so because
if when while since before after until than then there here how what which who whom whose why
where well very more less much many one two three""".split())

PRONOUN_WORD = re.compile(r"\b(he|him|his|himself|she|her|hers|herself)\b", re.IGNORECASE)


def _match_case(original: str, new: str) -> str:
    if len(original) > 1 and original.isupper():
        return new.upper()
    return new[:1].upper() + new[1:] if original[:1].isupper() else new


def swap_pronoun(word: str, next_word: str | None = None) -> str:
    """The opposite-gender form of a pronoun, keeping its capitalisation: he<->she,
    him<->her, his<->her(s), himself<->herself. `next_word` (lower case, None at punctuation or
    the end) tells object "her" (-> him) from possessive "her" (-> his), and "his" (-> her)
    from a standalone "his" (-> hers)."""
    lower = word.lower()
    if lower == "her":
        objective = (next_word is None or next_word in _OBJECT_FOLLOWERS
                     or next_word.endswith("ly"))
        new = "him" if objective else "his"
    elif lower == "his":
        new = "hers" if next_word is None else "her"
    elif lower in _SWAP:
        new = _SWAP[lower]
    else:
        raise SuiteError(f"{word!r} is not a gendered pronoun ({sorted(PRONOUN_GENDER)})")
    return _match_case(word, new)


def _next_word(text: str, end: int) -> str | None:
    m = re.match(r"\s*([A-Za-z]+)", text[end:])
    return m.group(1).lower() if m else None


def swap_spans(text: str, spans: list[tuple[int, int]]) -> str:
    out, pos = [], 0
    for start, end in sorted(spans):
        out.append(text[pos:start])
        out.append(swap_pronoun(text[start:end], _next_word(text, end)))
        pos = end
    return "".join(out) + text[pos:]
