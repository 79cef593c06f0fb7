"""A plain Hugging Face directory from an HF module: what `from_pretrained` loads without interp.

The HF export and the GGUF conversion cache both write through `write_plain_hf`.
"""

from __future__ import annotations

from pathlib import Path

import torch


def plain_config(hf, torch_dtype: torch.dtype):
    """A copy of HF module `hf`'s config that a plain `from_pretrained` reads as it, in plain
    tensors of `torch_dtype`."""
    import copy

    config = copy.deepcopy(hf.config)
    # A model loaded from a GGUF keeps the loader's notes: a quantization_config saying the
    # weights are GGUF-quantized (plain tensors are written instead) and the GGUF's name.
    for attr in ("quantization_config", "_model_name_or_path"):
        if attr in config.__dict__:
            delattr(config, attr)
    config.architectures = [type(hf).__name__]
    config.dtype = str(torch_dtype).removeprefix("torch.")
    return config


def untied_items(state_dict: dict, config):
    tie = bool(getattr(config, "tie_word_embeddings", False))
    seen: set[int] = set()
    for name, t in state_dict.items():
        if tie and t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        yield name, t


def cpu_tensors(items, torch_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in items:
        want = torch_dtype if t.is_floating_point() else t.dtype
        out[name] = t.detach().to(device="cpu", dtype=want).contiguous()
    return out


def write_plain_hf(hf, state_dict: dict, tokenizer, out: Path, torch_dtype: torch.dtype) -> None:
    """Config, generation config, weights (tied ones once) and tokenizer of HF module `hf` into
    `out`: a directory plain `from_pretrained` loads. `state_dict` holds the weights under plain
    HF names (a bridged module's own state dict lists each weight under several aliases)."""
    from safetensors.torch import save_file

    plain_config(hf, torch_dtype).save_pretrained(out)
    generation = getattr(hf, "generation_config", None)
    if generation is not None and hf.can_generate():
        generation.save_pretrained(out)
    tensors = cpu_tensors(untied_items(state_dict, hf.config), torch_dtype)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
