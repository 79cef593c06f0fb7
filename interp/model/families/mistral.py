"""Mistral: Llama's layout (llama.cpp runs it as llama: same tensors, same rotary layout)."""

from .base import Family

FAMILY = Family("mistral", ("mistral",), gguf="llama")
