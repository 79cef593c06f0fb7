"""A model's shape from its spec without reading its weights: the family, layer count and widths
that the command line checks options and edit files against before it loads anything.

`probe(spec)` takes what `load_model` takes and answers without loading weights: a GGUF file's
header (read here: transformers' reader also parses every tensor entry and the tokenizer's
vocabulary, which takes seconds), an HF directory's config.json, a tiny model's config,
a hub name's config (from the local cache or the network).
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..common.errors import ModelLoadError
from .arch import Architecture

# GGUF's value types (gguf spec): fixed-size scalars by struct code; 8 = string, 9 = array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}
_STRING, _ARRAY = 8, 9

# llama.cpp's architecture names -> transformers' model_type (where they differ).
_GGUF_MODEL_TYPES = {"gemma3": "gemma3_text", "gptneox": "gpt_neox"}

# GGUF "<arch>.<key>" -> the generic HF config name (configs map these onto their own names).
_GGUF_KEYS = {"block_count": "num_hidden_layers", "embedding_length": "hidden_size",
              "feed_forward_length": "intermediate_size",
              "attention.head_count": "num_attention_heads",
              "attention.head_count_kv": "num_key_value_heads",
              "attention.key_length": "head_dim", "vocab_size": "vocab_size"}


def gguf_metadata(path: str | Path) -> dict:
    """The scalar and string key/values of a GGUF file's header (arrays are skipped)."""
    import mmap

    path = Path(path)
    out = {}
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            at = 0

            def read(fmt):
                nonlocal at
                v = struct.unpack_from("<" + fmt, buf, at)[0]
                at += struct.calcsize("<" + fmt)
                return v

            def string():
                nonlocal at
                n = read("Q")
                if at + n > len(buf):
                    raise EOFError
                at += n
                return bytes(buf[at - n:at]).decode("utf-8", errors="replace")

            def skip_strings(n):
                nonlocal at
                for _ in range(n):  # each string is its uint64 length, then its bytes
                    at += 8 + struct.unpack_from("<Q", buf, at)[0]

            def value(kind):
                nonlocal at
                if kind in _SCALARS:
                    return read(_SCALARS[kind])
                if kind == _STRING:
                    return string()
                if kind == _ARRAY:
                    inner, n = read("I"), read("Q")
                    if inner in _SCALARS:
                        at += n * struct.calcsize("<" + _SCALARS[inner])
                    elif inner == _STRING:
                        skip_strings(n)
                    else:
                        for _ in range(n):
                            value(inner)
                    return None
                raise ValueError(f"unknown GGUF value type {kind}")

            if buf[:4] != b"GGUF":
                raise ModelLoadError(f"{path} is not a GGUF file (it does not start with the GGUF "
                                     "magic bytes): re-download it, or pass an HF directory")
            at = 4
            read("I")  # version
            read("Q")  # tensor count
            for _ in range(read("Q")):
                key = string()
                v = value(read("I"))
                if v is not None:
                    out[key] = v
    except (EOFError, ValueError, struct.error) as e:
        raise ModelLoadError(f"{path} is truncated or damaged: its GGUF header cannot be read "
                             f"({e or 'it ends early'}); re-download it") from e
    except OSError as e:
        raise ModelLoadError(f"cannot read {path}: {e.strerror}") from e
    return out


def _gguf_config(path: Path):
    from transformers import AutoConfig

    meta = gguf_metadata(path)
    arch = meta.get("general.architecture")
    if arch is None:
        raise ModelLoadError(f"{path}: its GGUF header names no architecture; re-export it")
    model_type = _GGUF_MODEL_TYPES.get(arch, arch)
    kwargs = {hf: meta[f"{arch}.{k}"] for k, hf in _GGUF_KEYS.items() if f"{arch}.{k}" in meta}
    try:
        return AutoConfig.for_model(model_type, **kwargs)
    except ValueError:  # transformers has no such model_type: Architecture names what we know
        from types import SimpleNamespace

        return SimpleNamespace(model_type=model_type)


def _config(spec: str):
    from transformers import AutoConfig

    from .load import (BUNDLED_NAME, GEMMA_NAME, bundled_gguf, gemma_gguf, hub_offline,
                       looks_like_path)
    from .tiny import EXTRA, tiny_names

    name = spec.lower()
    if name == BUNDLED_NAME:
        directory, file = bundled_gguf()
        return _gguf_config(directory / file)
    if name == GEMMA_NAME:
        return _gguf_config(gemma_gguf())
    if spec in tiny_names():
        from .tiny import tiny_config

        return tiny_config(spec.removeprefix("tiny-"), _Vocabulary())
    if spec.startswith("tiny-"):
        raise ModelLoadError(f"no tiny model {spec!r}: the tiny models are "
                             f"{', '.join('tiny-' + t for t in EXTRA)}")
    path = Path(spec).expanduser()
    if path.suffix == ".gguf" or path.is_file():
        if not path.is_file():
            raise ModelLoadError(f"no GGUF file at {path}: check the path")
        return _gguf_config(path)
    if path.is_dir():
        try:
            return AutoConfig.from_pretrained(path)
        except Exception as e:
            raise ModelLoadError(f"{path} is not a Hugging Face model directory (no readable "
                                 f"config.json): {e}") from e
    if looks_like_path(spec):
        raise ModelLoadError(f"no model file or directory at {path}: check the path")
    try:
        return AutoConfig.from_pretrained(spec)
    except Exception as e:
        where = ("the Hub is off (HF_HUB_OFFLINE is set) and it is not in the local cache"
                 if hub_offline() else f"the Hugging Face Hub did not give its config ({e})")
        raise ModelLoadError(f"{spec!r} is not a local file or directory, and {where}: pass a "
                             "local directory or .gguf file, or check the name") from e


class _Vocabulary:
    """What `tiny_config` reads from a tokenizer, without loading the bundled one."""

    bos_token_id, eos_token_id = 1, 2

    def __len__(self) -> int:
        return 49152  # the bundled tokenizer's vocabulary, which tiny models borrow


def probe(spec: str | Path | None) -> Architecture:
    """The `Architecture` (family, layers, widths) `load_model(spec)` would give, from the spec's
    config alone. Raises `ModelLoadError` for a spec that names no model and
    `UnsupportedArchitectureError` for a family interp does not know."""
    from .load import BUNDLED_NAME

    return Architecture.from_config(_config(BUNDLED_NAME if spec is None else str(spec)))
