"""The formats and dtypes an export can take, and `ExportResult`: what an export wrote and how well
it reproduces the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("hf", "safetensors", "gguf")

DTYPES = {"hf": ("f32", "f16"), "safetensors": ("f32", "f16"), "gguf": ("f32", "f16", "q8_0")}


@dataclass
class ExportResult:
    """What was written and how well it reproduces the model.

    max_abs_diff: largest |logit difference| at the last position over the prompts; kl: mean
    KL(model ‖ export) of the next-token distributions; ok: f32 within F32_TOLERANCE (other
    dtypes: the reload worked and gave finite logits) and the tokenizer round-trips; None for
    all three when verify=False. tokenizer_ok: the reloaded tokenizer gives the same ids (None
    for safetensors, which carries no tokenizer). weights_identical: the reloaded weights hash
    to the model's fingerprint (f32 only)."""

    path: Path
    format: str
    dtype: str
    size_bytes: int
    max_abs_diff: float | None = None
    kl: float | None = None
    ok: bool | None = None
    tokenizer_ok: bool | None = None
    weights_identical: bool | None = None
    fingerprint: str = ""
    prompts: tuple[str, ...] = ()
    tensor_types: dict[str, int] = field(default_factory=dict)  # GGUF: tensor count per type

    def summary(self) -> str:
        size = f"{self.size_bytes / 2**20:.1f} MiB"
        head = f"{self.format} {self.dtype} -> {self.path} ({size})"
        if self.ok is None:
            return f"{head}; not verified"
        return (f"{head}; reload max |Δlogit| {self.max_abs_diff:.3g}, mean KL {self.kl:.3g} over "
                f"{len(self.prompts)} prompts; tokenizer "
                f"{'n/a' if self.tokenizer_ok is None else self.tokenizer_ok}; ok={self.ok}")
