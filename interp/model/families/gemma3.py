"""Gemma 3 (text): Gemma 2's post-norms on attention and MLP outputs, RMS norms on queries and
keys, and sliding-window layers with their own rotary base (`config.layer_types`)."""

from .base import POST_NORMS, Family

FAMILY = Family("gemma3", ("gemma3_text",), out_norms=POST_NORMS)
