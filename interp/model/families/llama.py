"""Llama: pre-norm blocks; the MLP's down projection and attention's o_proj add to the stream."""

from .base import Family

FAMILY = Family("llama", ("llama",), gguf="llama")
