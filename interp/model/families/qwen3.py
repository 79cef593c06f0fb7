"""Qwen 3: Llama's layout with RMS norms on queries and keys (inside attention, before o_proj:
the edited map is unchanged)."""

from .base import Family

FAMILY = Family("qwen3", ("qwen3",))
