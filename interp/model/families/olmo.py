"""OLMo 1: Llama's layout with non-parametric layer norms (pre-norm: outputs add to the stream)."""

from .base import Family

FAMILY = Family("olmo", ("olmo",))
