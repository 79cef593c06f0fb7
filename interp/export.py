"""Export a model (usually an edited one) as a Hugging Face directory, one safetensors file, or a
GGUF file for llama.cpp-based tools, and prove the export reproduces the model.

Every export is written to a temporary path, reloaded in a fresh Python process (so nothing from
this process, such as hooks, the bridge or cached weights, can help it), compared with the
in-memory model on the last-token logits of a few prompts, and only then moved into place. A
failure at any step leaves no output behind.

    result = export(model, "out/smollm2-debiased", "hf", edit=edit)
    result = export(model, "out/smollm2-debiased.gguf", "gguf", dtype="q8_0")
    print(result.summary())

GGUF tokenizer: a GGUF file carries its tokenizer as `tokenizer.ggml.*` metadata. We copy those
fields verbatim from the GGUF the model was loaded from. A model that did not come from a GGUF
(a tiny test model, a Hugging Face directory) gets them from the bundled SmolLM2 GGUF when its
tokenizer has exactly the bundled tokenizer's vocabulary (the tiny models borrow it, and an
`hf` export of the bundled model keeps it); any other tokenizer is a clear error for now, because
llama.cpp also needs the name of the pre-tokenizer (`tokenizer.ggml.pre`), which cannot be read
off a Hugging Face tokenizer reliably.

`_main(["--check", REQUEST.json])`, run in a fresh interpreter, is the checker.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import InterpError, UnsupportedArchitectureError

FORMATS = ("hf", "safetensors", "gguf")
DTYPES = {"hf": ("f32", "f16"), "safetensors": ("f32", "f16"), "gguf": ("f32", "f16", "q8_0")}
TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16}
DEFAULT_PROMPTS = (
    "The nurse said that",
    "The capital of France is",
    "The engineer told the client that",
    "Once upon a time, there was a",
)
F32_TOLERANCE = 1e-5  # max |Δ logit| an f32 export may show; in practice it is exactly 0
# HF model types we can write as GGUF, and the llama.cpp architecture each becomes (llama.cpp
# runs Mistral as llama: same tensors, same rotary layout).
GGUF_ARCHITECTURES = {"llama": "llama", "mistral": "llama"}
CHECK_TIMEOUT_S = 900


class ExportError(InterpError):
    """A model cannot be exported as asked."""


class UnsupportedExportError(ExportError, UnsupportedArchitectureError):
    """The model's architecture (or one of its features) has no writer for this format."""


class VerificationError(ExportError):
    """The export does not reproduce the in-memory model; nothing was written."""


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


# ---------------------------------------------------------------------------------------------
# The entry point


def export(model, path: str | os.PathLike, format: str = "hf", *, dtype: str = "f32", edit=None,
           verify: bool = True, prompts=None) -> ExportResult:
    """Write `model` to `path` and (verify=True) check the export in a fresh process.

    format: "hf" (a directory `AutoModelForCausalLM.from_pretrained` loads, with tokenizer, a
    model card and the edit), "safetensors" (one file, plain HF names, provenance in its
    metadata) or "gguf" (one file for llama.cpp; llama-family models only).
    dtype: "f32" or "f16"; GGUF also "q8_0" (norms stay f32; tensors whose rows are not a multiple
    of 32 fall back to f16).
    edit: the `interp.edit.Edit` whose provenance to record. If it is applied to `model` the
    weights are exported as they are; if `model` is the model it was fitted on, it is applied
    for the export and reverted after.
    prompts: texts (or Prompts) to compare logits on; default DEFAULT_PROMPTS.

    Raises VerificationError (and writes nothing) when an f32 export differs by more than
    F32_TOLERANCE from the model."""
    _check_request(format, dtype)
    texts = _prompt_texts(prompts)
    path = Path(path)
    if format == "gguf":
        _check_gguf_supported(model)
    source = _gguf_tokenizer_source(model) if format == "gguf" else None
    atomic = _atomic(format, path)
    with _edit_in_place(model, edit) as applied_here:
        meta = provenance(model, edit, format=format, dtype=dtype, applied_here=applied_here)
        with atomic(path) as tmp:
            tensor_types = WRITERS[format](model, tmp, dtype, meta, edit, source)
            result = ExportResult(path=path, format=format, dtype=dtype, size_bytes=0,
                                  fingerprint=meta["fingerprint"], prompts=tuple(texts),
                                  tensor_types=tensor_types or {})
            if verify:
                _verify(model, tmp, result)
            if format == "hf":  # the card reports the verification, so it is written last
                (tmp / "README.md").write_text(model_card(model, meta, edit, result))
            result.size_bytes = _size(tmp)
            _share(tmp)
    return result


def _check_request(format: str, dtype: str) -> None:
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")
    if dtype not in DTYPES[format]:
        hint = " (q8_0 needs format='gguf')" if dtype == "q8_0" else ""
        raise ExportError(f"dtype {dtype!r} is not available for format {format!r}: choose one of "
                          f"{', '.join(DTYPES[format])}{hint}")


def _prompt_texts(prompts) -> list[str]:
    texts = [getattr(p, "text", p) for p in (DEFAULT_PROMPTS if prompts is None else prompts)]
    if not texts or not all(isinstance(t, str) and t for t in texts):
        raise ExportError("prompts must be a non-empty list of non-empty texts (or Prompts)")
    return texts


def _atomic(format: str, path: Path):
    from .io import atomic_dir, atomic_path

    if format == "hf":
        if path.is_file():
            raise ExportError(f"{path} is a file, but an 'hf' export is a directory: "
                              "pick a new path")
        return atomic_dir
    if path.is_dir():
        raise ExportError(f"{path} is a directory, but a {format!r} export is one file: give a "
                          f"file name, e.g. {path / ('model.' + format)}")
    return atomic_path


@contextlib.contextmanager
def _edit_in_place(model, edit):
    """Yield whether this export applied `edit` itself (it is reverted on the way out)."""
    if edit is None or edit.is_applied(model):
        yield False
        return
    with edit.applied(model):  # raises EditError when the edit belongs to another model
        yield True


def provenance(model, edit=None, *, format: str = "", dtype: str = "",
               applied_here: bool = False) -> dict:
    """Where the exported weights came from: source, fingerprint, and the edit's record."""
    from . import __version__

    meta = {
        "interp_version": __version__, "model": model.name, "source": dict(model.source),
        "fingerprint": model.fingerprint(), "format": format, "dtype": dtype,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if edit is not None:
        meta["edit"] = dict(edit.meta)
        meta["edit_applied_by_export"] = applied_here
    return meta


def _share(path: Path) -> None:
    """Give the export the usual permissions: the atomic temporaries are created private
    (0600 files, a 0700 directory), which would make a shared model unreadable to others."""
    umask = os.umask(0o022)
    os.umask(umask)
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Plain Hugging Face tensors


def plain_items(model):
    """(plain HF name, tensor) of every weight, tied ones (lm_head tied to the embedding) left
    out as `save_pretrained` does: HF re-ties them on load from `tie_word_embeddings`."""
    return _untied(model.state_dict(), model.hf.config)


def _untied(state_dict: dict, config):
    tie = bool(getattr(config, "tie_word_embeddings", False))
    seen: set[int] = set()
    for name, t in state_dict.items():
        if tie and t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        yield name, t


def _cpu_tensors(items, torch_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in items:
        want = torch_dtype if t.is_floating_point() else t.dtype
        out[name] = t.detach().to(device="cpu", dtype=want).contiguous()
    return out


def plain_tensors(model, dtype: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The weights under plain HF names in `dtype`, on the CPU: (tensors, {left out: tied to})."""
    tensors = _cpu_tensors(plain_items(model), TORCH_DTYPES[dtype])
    weights = model.state_dict()
    kept = {weights[n].data_ptr(): n for n in tensors}
    tied = {n: kept[t.data_ptr()] for n, t in weights.items() if n not in tensors}
    return tensors, tied


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


def export_config(model, dtype: str):
    """A copy of the HF config that a plain `from_pretrained` reads as this model."""
    return plain_config(model.hf, TORCH_DTYPES[dtype])


def write_plain_hf(hf, state_dict: dict, tokenizer, out: Path, torch_dtype: torch.dtype) -> None:
    """Config, generation config, weights (tied ones once) and tokenizer of HF module `hf` into
    `out`: a directory plain `from_pretrained` loads. `state_dict` holds the weights under plain
    HF names (a bridged module's own state dict lists each weight under several aliases)."""
    from safetensors.torch import save_file

    plain_config(hf, torch_dtype).save_pretrained(out)
    generation = getattr(hf, "generation_config", None)
    if generation is not None and hf.can_generate():
        generation.save_pretrained(out)
    tensors = _cpu_tensors(_untied(state_dict, hf.config), torch_dtype)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)


# ---------------------------------------------------------------------------------------------
# Writers: each writes into a temporary path the atomic wrapper then moves into place


def _write_hf(model, out: Path, dtype: str, meta: dict, edit, _source) -> None:
    write_plain_hf(model.hf, model.state_dict(), model.tokenizer, out, TORCH_DTYPES[dtype])
    if edit is not None:
        edit.save(out / "edit.safetensors")
    (out / "interp_provenance.json").write_text(json.dumps(meta, indent=2, default=str))


def _write_safetensors(model, out: Path, dtype: str, meta: dict, edit, _source) -> None:
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


def _write_gguf(model, out: Path, dtype: str, meta: dict, edit, source: Path) -> dict[str, int]:
    import gguf

    fields = source_fields(source)
    writer = gguf.GGUFWriter(out, GGUF_ARCHITECTURES[model.arch.model_type])
    try:
        _gguf_hyperparameters(writer, model.hf.config)
        _gguf_general(writer, model, fields, meta, dtype, from_source=_is_gguf_source(model))
        _gguf_tokenizer(writer, fields, model.arch.vocab_size, source)
        layout = gguf_layout(model, dtype)
        for name, _, shape, qtype in layout:
            writer.add_tensor_info(name, *_gguf_tensor_info(shape, qtype))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        # One tensor at a time, so the file never needs a second copy of the model in memory.
        weights = model.state_dict()
        for name, hf_name, _, qtype in layout:
            writer.write_tensor_data(gguf_array(weights[hf_name], name, qtype, model.hf.config))
    finally:
        writer.close()
    return dict(collections.Counter(qtype.name for *_, qtype in layout))


WRITERS = {"hf": _write_hf, "safetensors": _write_safetensors, "gguf": _write_gguf}


# ---------------------------------------------------------------------------------------------
# GGUF: metadata, tokenizer, tensors


def _check_gguf_supported(model) -> None:
    config = model.hf.config
    mt = model.arch.model_type
    if mt not in GGUF_ARCHITECTURES:
        raise UnsupportedExportError(
            f"GGUF export supports only these model types: {', '.join(GGUF_ARCHITECTURES)}; this "
            f"model is {mt!r}. Export it with format='hf' or 'safetensors' instead (llama.cpp's "
            "convert_hf_to_gguf.py can convert an 'hf' export)."
        )
    rope = _rope_parameters(config)
    problems = []
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope scaling {rope.get('rope_type')!r} (only plain rotary is written)")
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"activation {config.hidden_act!r} (llama.cpp's llama uses silu)")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("bias terms in attention or MLP")
    if problems:
        raise UnsupportedExportError(
            "GGUF export writes plain llama models; this one has " + "; ".join(problems) +
            ". Export it with format='hf' and convert it with llama.cpp's convert_hf_to_gguf.py."
        )


def _rope_parameters(config) -> dict:
    # transformers 5 keeps rope settings in `rope_parameters`; older configs in rope_theta/scaling.
    rope = dict(getattr(config, "rope_parameters", None) or {})
    scaling = getattr(config, "rope_scaling", None)
    if scaling and "rope_type" not in rope:
        rope["rope_type"] = scaling.get("rope_type", scaling.get("type", "default"))
    rope.setdefault("rope_theta", getattr(config, "rope_theta", None) or 10000.0)
    return rope


def _is_gguf_source(model) -> bool:
    return model.source.get("kind") in ("bundled", "gguf") and bool(model.source.get("path"))


def _gguf_tokenizer_source(model) -> Path:
    """The GGUF whose tokenizer.* fields the export copies (see the module docstring)."""
    if _is_gguf_source(model):
        return Path(model.source["path"])
    from .errors import ModelLoadError
    from .models import bundled_gguf, bundled_tokenizer

    try:
        if same_vocabulary(model.tokenizer, bundled_tokenizer()):
            directory, name = bundled_gguf()
            return directory / name
    except ModelLoadError:
        pass  # no bundled model installed: fall through to the error below
    raise ExportError(
        f"GGUF export needs the tokenizer in GGUF form, and this model came from "
        f"{model.source.get('kind', 'an unknown source')!r} with a tokenizer that is not the "
        "bundled SmolLM2 one. For now, load the model from a .gguf file "
        "(interp.load_model('model.gguf')) before exporting to GGUF, or export format='hf' and "
        "convert that directory with llama.cpp's convert_hf_to_gguf.py."
    )


def same_vocabulary(a, b) -> bool:
    """Whether two HF tokenizers map the same strings to the same ids (added tokens included)."""
    return a is b or (len(a) == len(b) and a.get_vocab() == b.get_vocab())


def _gguf_hyperparameters(writer, config) -> None:
    n_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or n_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(_rope_parameters(config)["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    if head_dim * n_heads != config.hidden_size:  # llama.cpp assumes hidden / heads otherwise
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


# general.* keys the export sets itself rather than copying from the source GGUF.
_GENERAL_OWN = ("general.architecture", "general.name", "general.file_type",
                "general.quantization_version", "general.alignment", "general.description")
_FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0"}


def _gguf_general(writer, model, fields: dict, meta: dict, dtype: str, *, from_source: bool):
    import gguf

    # Only a GGUF the model itself came from describes it; the bundled file lending a tiny model
    # its tokenizer does not (its size label, licence and name are SmolLM2's).
    if from_source:
        for key, f in fields.items():
            if key.startswith("general.") and key not in _GENERAL_OWN:
                writer.add_key_value(key, *f)
    name = fields["general.name"][0] if from_source and "general.name" in fields else None
    name = name or Path(model.name).name  # a directory or hub spec: its last part
    if "edit" in meta:
        name += f" ({meta['edit'].get('method', 'edited')} edit)"
        writer.add_description(f"{name}: weights edited by interp "
                               f"{meta['edit'].get('method', '')} on layers "
                               f"{meta['edit'].get('layers')}")
    writer.add_name(name)
    writer.add_file_type(int(getattr(gguf.LlamaFileType, _FILE_TYPES[dtype])))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # Provenance under our own prefix; llama.cpp ignores keys it does not know.
    writer.add_string("interp.fingerprint", meta["fingerprint"])
    writer.add_string("interp.provenance", json.dumps(meta, default=str))


def _gguf_tokenizer(writer, fields: dict, vocab_size: int, source: Path) -> None:
    tokens = fields.get("tokenizer.ggml.tokens")
    if tokens is None:
        raise ExportError(f"{source} has no tokenizer (tokenizer.ggml.tokens): cannot write a "
                          "GGUF llama.cpp can run from it")
    if len(tokens[0]) != vocab_size:
        raise ExportError(
            f"the tokenizer in {source} has {len(tokens[0])} tokens but the model's embedding "
            f"has {vocab_size} rows; llama.cpp needs them equal. Export format='hf' instead."
        )
    for key, f in fields.items():
        if key.startswith("tokenizer."):
            writer.add_key_value(key, *f)


def source_fields(path: Path) -> dict[str, tuple]:
    """{key: (value, type, sub_type)} of a GGUF file's general.* and tokenizer.* metadata."""
    path = Path(path).resolve()
    st = path.stat()
    return _source_fields(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _source_fields(path: str, _mtime_ns: int, _size: int) -> dict[str, tuple]:
    # Cached (keyed by the file's stamp): parsing a 49k-token vocabulary takes seconds.
    import gguf

    out = {}
    for f in gguf.GGUFReader(path).fields.values():
        if f.name.startswith(("general.", "tokenizer.")):
            vtype = f.types[0]
            sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            out[f.name] = (f.contents(), vtype, sub)
    return out


def permute_qk(w: torch.Tensor, n_head: int, n_head_kv: int | None = None) -> torch.Tensor:
    """Reorder Q/K rows from HF's rotate-half rotary layout to llama.cpp's interleaved one.

    The same as llama.cpp's convert_hf_to_gguf.py `LlamaModel.permute`; transformers' GGUF loader
    undoes it (`LlamaTensorProcessor._reverse_permute_weights`)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_layout(model, dtype: str) -> list[tuple]:
    """(llama.cpp name, HF name, shape, GGMLQuantizationType) of every weight, in file order."""
    import gguf

    config = model.hf.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    layout = []
    for hf_name, t in plain_items(model):
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UnsupportedExportError(
                f"the weight {hf_name!r} has no llama.cpp counterpart, so this model cannot be "
                "written as GGUF; export it with format='hf'.")
        shape = tuple(t.shape)
        layout.append((name, hf_name, shape, storage_type(shape, dtype)))
    return layout


def storage_type(shape: tuple[int, ...], dtype: str):
    """The GGUF type a tensor of `shape` is stored in for `dtype`: 1-D tensors (norms) stay f32;
    q8_0 needs rows that split into 32-value blocks and falls back to f16 otherwise."""
    import gguf

    T = gguf.GGMLQuantizationType
    if len(shape) < 2 or dtype == "f32":
        return T.F32
    if dtype == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[T.Q8_0][0] == 0:
        return T.Q8_0
    return T.F16


def _gguf_tensor_info(shape: tuple[int, ...], qtype) -> tuple:
    """GGUFWriter.add_tensor_info's (shape, numpy dtype, bytes, raw type) for a tensor not yet
    encoded: the header is written before the data, so each tensor is encoded only when written."""
    import gguf
    import numpy as np

    T = gguf.GGMLQuantizationType
    if qtype in (T.F32, T.F16):
        np_dtype = np.float32 if qtype == T.F32 else np.float16
        return shape, np_dtype, math.prod(shape) * np.dtype(np_dtype).itemsize, None
    byte_shape = gguf.quant_shape_to_byte_shape(shape, qtype)
    return byte_shape, np.uint8, math.prod(byte_shape), qtype


def gguf_array(t: torch.Tensor, name: str, qtype, config):
    """The numpy data stored for weight `t` under llama.cpp name `name`: Q/K rows permuted to
    llama.cpp's rotary layout, then encoded as `qtype`."""
    import gguf
    import numpy as np

    n_heads = config.num_attention_heads
    t = t.detach().to(device="cpu", dtype=torch.float32)
    if name.endswith("attn_q.weight"):
        t = permute_qk(t, n_heads, n_heads)
    elif name.endswith("attn_k.weight"):
        t = permute_qk(t, n_heads, getattr(config, "num_key_value_heads", None) or n_heads)
    data = np.ascontiguousarray(t.numpy())
    T = gguf.GGMLQuantizationType
    if qtype == T.F32:
        return data
    if qtype == T.F16:
        return data.astype(np.float16)
    return gguf.quants.quantize(data, qtype)


# ---------------------------------------------------------------------------------------------
# The model card


def model_card(model, meta: dict, edit=None, result: ExportResult | None = None) -> str:
    """README.md for an 'hf' export: source, fingerprint, the edit's provenance, verification."""
    source = meta["source"]
    lines = ["---", "library_name: transformers"]
    if source.get("hub_id"):
        lines.append(f"base_model: {source['hub_id']}")
    lines += ["tags:", "- interp"] + (["- bias-mitigation", f"- {edit.meta.get('method', 'edit')}"]
                                      if edit is not None else [])
    lines += ["---", "", f"# {model.name} (exported by interp {meta['interp_version']})", ""]
    lines += [
        f"- Source: {_describe_source(source)}",
        ("- Weights fingerprint (blake2b of the exported weights at export time): "
         f"`{meta['fingerprint']}`"),
        f"- Weights: `model.safetensors`, {meta['dtype']}; exported {meta['created']}",
        "",
    ]
    if edit is not None:
        lines += _edit_section(edit.meta, meta.get("edit_applied_by_export", False))
    else:
        lines += ["No interp edit was recorded with these weights.", ""]
    if result is not None and result.ok is not None:
        lines += [
            "## Verification", "",
            ("Reloaded in a fresh process and compared with the in-memory model on the last-token "
             f"logits of {len(result.prompts)} prompts: max |Δlogit| = {result.max_abs_diff:.3g}, "
             f"mean KL = {result.kl:.3g}, tokenizer round-trip: {result.tokenizer_ok}."), "",
        ]
    lines += [("Load it with `transformers.AutoModelForCausalLM.from_pretrained(this_dir)`, or "
               "`interp.load_model(this_dir)`. Full provenance: `interp_provenance.json`."), ""]
    return "\n".join(lines)


def _describe_source(source: dict) -> str:
    kind = source.get("kind", "unknown")
    detail = source.get("hub_id") or source.get("path") or (
        f"seed {source['seed']}" if "seed" in source else "")
    return f"{kind} ({detail})" if detail else kind


def _edit_section(em: dict, applied_here: bool) -> list[str]:
    rows = [("method", em.get("method")), ("layers", em.get("layers")), ("λ (lam)", em.get("lam")),
            ("fitted on fingerprint", f"`{em.get('fingerprint')}`"),
            ("edit prompts", em.get("n_prompts", len(em.get("prompts", []) or []))),
            ("subjects", len(em.get("subjects", []) or [])), ("seed", em.get("seed")),
            ("statistics tokens", em.get("stats_tokens")), ("created", em.get("created"))]
    out = ["## Edit", "", "| field | value |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in rows if v is not None]
    for key in ("targets", "metrics"):
        if em.get(key):
            out += ["", f"{key.capitalize()}:", "", "```json",
                    json.dumps(em[key], indent=2, default=str), "```"]
    out += ["", "The low-rank updates are in `edit.safetensors` (`interp.edit.Edit.load`)"
            + ("; the export applied the edit to the source weights." if applied_here else "."), ""]
    return out


# ---------------------------------------------------------------------------------------------
# Verification: reload in a fresh process, compare last-token logits


def _verify(model, written: Path, result: ExportResult) -> None:
    ids = [model.tokenizer(t)["input_ids"] for t in result.prompts]
    expected = last_token_logits(model.hf, ids, model.device)
    with tempfile.TemporaryDirectory(prefix="interp-export-check-") as work:
        request = {"format": result.format, "path": str(written), "ids": ids,
                   "texts": list(result.prompts), "dtype": str(model.dtype).removeprefix("torch."),
                   "device": str(model.device), "out": work}
        report = _run_check(request)
        got = _load_logits(Path(work) / "logits.safetensors")
    result.max_abs_diff, result.kl = compare_logits(expected, got)
    reloaded_ids = report["tokenizer_ids"]
    result.tokenizer_ok = None if reloaded_ids is None else reloaded_ids == ids
    exact = result.dtype == "f32" and model.dtype == torch.float32
    result.weights_identical = (report["fingerprint"] == result.fingerprint) if exact else None
    finite = math.isfinite(result.max_abs_diff) and math.isfinite(result.kl)
    logits_ok = finite and (result.max_abs_diff <= F32_TOLERANCE if exact else True)
    result.ok = logits_ok and result.tokenizer_ok is not False
    if exact and not logits_ok:
        raise VerificationError(
            f"the {result.format} f32 export does not reproduce the model: max |Δlogit| = "
            f"{result.max_abs_diff:.3g} over {len(ids)} prompts (tolerance {F32_TOLERANCE}), so "
            "nothing was written. This is an exporter bug for this architecture; please report "
            "it (export(..., verify=False) writes the file anyway)."
        )


@torch.no_grad()
def last_token_logits(hf, ids: list[list[int]], device) -> torch.Tensor:
    """(n_prompts, vocab) float32 logits at each prompt's last token, one unpadded forward each."""
    rows = [hf(torch.tensor([seq], device=device)).logits[0, -1].float().cpu() for seq in ids]
    return torch.stack(rows)


def compare_logits(expected: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    """(max |difference|, mean KL(expected ‖ got)) of two (n, vocab) logit tables."""
    if expected.shape != got.shape:
        raise VerificationError(f"the reloaded export gives logits of shape {tuple(got.shape)}, "
                                f"the model {tuple(expected.shape)}: nothing was written")
    p, q = expected.double().log_softmax(-1), got.double().log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1).mean()
    return float((expected - got).abs().max()), max(float(kl), 0.0)


def _run_check(request: dict) -> dict:
    req = Path(request["out"]) / "request.json"
    req.write_text(json.dumps(request))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    # The package root first on the path, so the child imports this very interp.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    try:
        # -c rather than -m: the package imports this module, and -m would run a second copy.
        code = "import sys; from interp.export import _main; sys.exit(_main(sys.argv[1:]))"
        proc = subprocess.run([sys.executable, "-c", code, "--check", str(req)],
                              env=env, capture_output=True, text=True, check=False,
                              timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise VerificationError(f"reloading the export took over {CHECK_TIMEOUT_S} s; nothing "
                                "was written (export(..., verify=False) skips the check)") from e
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise VerificationError(
            f"the {request['format']} export could not be reloaded in a fresh process, so nothing "
            f"was written. The reload said:\n{tail}")
    return json.loads((Path(request["out"]) / "report.json").read_text())


def _load_logits(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))["logits"]


# ---------------------------------------------------------------------------------------------
# Reloading an export with plain transformers (used by the fresh-process check)


def reload(path: str | os.PathLike, format: str | None = None, *, dtype=torch.float32,
           attn_implementation: str | None = None):
    """Load an export with plain transformers: (HF causal LM, tokenizer or None).

    format: inferred from the path when None (a directory is 'hf', *.gguf is 'gguf', anything
    else 'safetensors'). A safetensors export builds the model from the config stored in its
    metadata and re-ties the weights it left out."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    format = format or ("hf" if path.is_dir() else "gguf" if path.suffix == ".gguf"
                        else "safetensors")
    kw = {"dtype": dtype}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    if format == "hf":
        return (AutoModelForCausalLM.from_pretrained(path, **kw).eval(),
                AutoTokenizer.from_pretrained(path))
    if format == "gguf":
        return (AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **kw).eval(),
                AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))
    if format == "safetensors":
        return _reload_safetensors(path, kw), None
    raise ExportError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")


def _reload_safetensors(path: Path, kw: dict):
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


def _check_main(request_path: str) -> None:
    """The fresh-process side of the verification: reload, tokenize, run, write results."""
    from .models import canonical_state_dict, weights_fingerprint

    req = json.loads(Path(request_path).read_text())
    dtype = getattr(torch, req["dtype"])
    if req["format"] == "gguf":
        _memoise_gguf_parsing()
    hf, tok = reload(req["path"], req["format"], dtype=dtype,
                     attn_implementation="eager")  # the TransformerBridge runs eager attention
    hf = hf.to(req["device"])
    logits = last_token_logits(hf, req["ids"], req["device"])
    from safetensors.torch import save_file

    out = Path(req["out"])
    save_file({"logits": logits.contiguous()}, str(out / "logits.safetensors"))
    report = {
        "tokenizer_ids": None if tok is None else [tok(t)["input_ids"] for t in req["texts"]],
        "fingerprint": weights_fingerprint(canonical_state_dict(hf)),
    }
    (out / "report.json").write_text(json.dumps(report))


def _memoise_gguf_parsing() -> None:
    """transformers' GGUF loader parses the file's metadata three times (config, weights,
    tokenizer) and rebuilds the same tensor-name map once per module; this one-shot process
    memoises both, which changes nothing that is read but halves the reload time."""
    import gguf

    if hasattr(gguf, "GGUFReader") and hasattr(gguf, "get_tensor_name_map"):
        gguf.GGUFReader = functools.lru_cache(maxsize=2)(gguf.GGUFReader)
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(gguf.get_tensor_name_map)


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--check":
        _check_main(argv[1])
        return 0
    print("usage: python -m interp.export --check REQUEST.json   (the export verifier; use "
          "interp.export.export() to export)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
