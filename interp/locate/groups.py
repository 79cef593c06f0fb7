"""Token groups: where a position sits relative to the subject, the unit a trace is averaged in.
"""

from __future__ import annotations

TOKEN_GROUPS = ("before subject", "first subject token", "middle subject tokens",
                "last subject token", "first following token", "further tokens", "last token")


def token_group(position: int, subject_span: tuple[int, int], n_tokens: int) -> str:
    a, b = subject_span
    if position == n_tokens - 1:
        return "last token"
    if position < a:
        return "before subject"
    if position == b - 1:
        return "last subject token"
    if position == a:
        return "first subject token"
    if position < b:
        return "middle subject tokens"
    if position == b:
        return "first following token"
    return "further tokens"
