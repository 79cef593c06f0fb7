"""The model's weights as plain HF tensors in the dtype an export asks for.
"""

from __future__ import annotations

import torch

from ..model.hf_dir import cpu_tensors, plain_config, untied_items

TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16}


def plain_items(model):
    """(plain HF name, tensor) of every weight, tied ones (lm_head tied to the embedding) left
    out as `save_pretrained` does: HF re-ties them on load from `tie_word_embeddings`."""
    return untied_items(model.state_dict(), model.hf.config)


def plain_tensors(model, dtype: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The weights under plain HF names in `dtype`, on the CPU: (tensors, {left out: tied to})."""
    tensors = cpu_tensors(plain_items(model), TORCH_DTYPES[dtype])
    weights = model.state_dict()
    kept = {weights[n].data_ptr(): n for n in tensors}
    tied = {n: kept[t.data_ptr()] for n, t in weights.items() if n not in tensors}
    return tensors, tied


def export_config(model, dtype: str):
    """A copy of the HF config that a plain `from_pretrained` reads as this model."""
    return plain_config(model.hf, TORCH_DTYPES[dtype])
