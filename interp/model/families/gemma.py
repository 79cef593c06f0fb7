"""Gemma 1: pre-norm blocks; the embedding is scaled by √d_model inside the embedding module (so
the stream entering block 0 already carries the scale)."""

from .base import Family

FAMILY = Family("gemma", ("gemma",))
