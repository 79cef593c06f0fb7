"""Weights under their plain Hugging Face names, and the fingerprint that says whether two sets of
weights are the same (an edit, an export and its reload are checked against it).
"""

from __future__ import annotations

import hashlib

import torch


def canonical_state_dict(hf: torch.nn.Module, keys: tuple[str, ...] = ()) -> dict:
    """`hf`'s state dict under plain HF names: the bridge's `_original_component.` path segments
    removed, its alias paths and extra buffers left out. `keys` are the names to keep (all of the
    module's own names when empty, i.e. for a module that was never bridged)."""
    raw = hf.state_dict(keep_vars=True)
    wanted = set(keys or raw)
    out: dict[str, torch.Tensor] = {}
    for k, v in raw.items():
        name = k.replace("_original_component.", "")
        if name in wanted and name not in out:
            out[name] = v.detach()
    missing = wanted - set(out)
    if missing:
        raise RuntimeError(f"weights not found under the bridge: {sorted(missing)[:5]}")
    return {k: out[k] for k in (keys or raw)}


def weights_fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """blake2b over the tensors in name order: names, shapes, dtypes, bytes; tied ones once."""
    h = hashlib.blake2b(digest_size=16)
    seen: set[int] = set()
    for name in sorted(state_dict):
        t = state_dict[name]
        if t.data_ptr() in seen:  # tied weights count once
            continue
        seen.add(t.data_ptr())
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        flat = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(flat.view(torch.uint8).numpy())
    return h.hexdigest()
