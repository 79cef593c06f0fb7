"""The `safetensors` format: one file under plain HF names, with the config, the tied names and
the provenance in its metadata, so it can be rebuilt without any other file.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ExportError
from .tensors import export_config, plain_tensors


def write_safetensors(model, out: Path, dtype: str, meta: dict, edit, _source) -> None:
    from safetensors.torch import save_file

    tensors, tied = plain_tensors(model, dtype)
    metadata = {
        "format": "pt",
        "interp_provenance": json.dumps(meta, default=str),
        "interp_source": json.dumps(meta["source"], default=str),
        "interp_fingerprint": meta["fingerprint"],
        "interp_config": export_config(model, dtype).to_json_string(use_diff=False),
        "interp_tied": json.dumps(tied),
    }
    if edit is not None:
        metadata["interp_edit"] = json.dumps(edit.meta, default=str)
    save_file(tensors, str(out), metadata=metadata)


def reload_safetensors(path: Path, kw: dict):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "interp_config" not in meta:
        raise ExportError(f"{path} was not written by interp.export (no interp_config metadata): "
                          "build the model from its config yourself and load the file")
    cfg = json.loads(meta["interp_config"])
    config = CONFIG_MAPPING[cfg["model_type"]].from_dict(cfg)
    model = AutoModelForCausalLM.from_config(config, **kw)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = set(json.loads(meta.get("interp_tied", "{}")))
    if unexpected or set(missing) - tied:
        raise ExportError(f"{path} does not fit its own config: missing "
                          f"{sorted(set(missing) - tied)[:5]}, unexpected {sorted(unexpected)[:5]}")
    model.tie_weights()
    return model.to(kw["dtype"]).eval()
