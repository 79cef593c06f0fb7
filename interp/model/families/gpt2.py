"""GPT-2: pre-norm blocks under `h`, learned positions (`wpe`) added inside the body, Conv1D
projections (weights stored (in, out)), a GELU MLP without a gate."""

from .base import Family

FAMILY = Family("gpt2", ("gpt2",), blocks="h", positions="wpe", gated_mlp=False)
