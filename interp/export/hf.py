"""The `hf` format: a directory `AutoModelForCausalLM.from_pretrained` loads, with tokenizer,
the edit and its provenance (the model card is written last, by `run.export`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..model.hf_dir import write_plain_hf
from .tensors import TORCH_DTYPES


def write_hf(model, out: Path, dtype: str, meta: dict, edit, _source) -> None:
    write_plain_hf(model.hf, model.state_dict(), model.tokenizer, out, TORCH_DTYPES[dtype])
    if edit is not None:
        edit.save(out / "edit.safetensors")
    (out / "interp_provenance.json").write_text(json.dumps(meta, indent=2, default=str))
