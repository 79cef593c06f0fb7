"""Small helpers on pandas tables that several stages share."""

from __future__ import annotations


def sample_rows(frame, limit: int | None, seed: int):
    """At most `limit` rows of `frame`, a seeded sample (the whole frame when `limit` is None)."""
    if not limit:
        return frame
    return frame.sample(n=min(limit, len(frame)), random_state=seed)
