"""One adapter per model family (see base.Family for what an adapter states), and the lookup
from an HF config's `model_type` to its adapter."""

from __future__ import annotations

from . import (gemma, gemma2, gemma3, gpt2, gpt_neox, gptj, llama, mistral, olmo, olmo2, phi3,
               qwen2, qwen3)
from .base import Family

FAMILIES: tuple[Family, ...] = tuple(m.FAMILY for m in (
    llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, olmo, olmo2, phi3, gpt2, gptj, gpt_neox))

BY_MODEL_TYPE: dict[str, Family] = {mt: f for f in FAMILIES for mt in f.model_types}


def known_model_types() -> tuple[str, ...]:
    return tuple(BY_MODEL_TYPE)


def family_of(model_type: str | None) -> Family | None:
    return BY_MODEL_TYPE.get(model_type)
