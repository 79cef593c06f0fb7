"""Qwen 2 / 2.5: Llama's layout with biases on q, k and v (not on the edited o_proj)."""

from .base import Family

FAMILY = Family("qwen2", ("qwen2",))
