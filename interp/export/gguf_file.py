"""The `gguf` format: one file llama.cpp runs (llama-family models only).

GGUF tokenizer: a GGUF file carries its tokenizer as `tokenizer.ggml.*` metadata. We copy those
fields verbatim from the GGUF the model was loaded from. A model that did not come from a GGUF
(a tiny test model, a Hugging Face directory) gets them from the bundled SmolLM2 GGUF when its
tokenizer has exactly the bundled tokenizer's vocabulary (the tiny models borrow it, and an
`hf` export of the bundled model keeps it); any other tokenizer is a clear error for now, because
llama.cpp also needs the name of the pre-tokenizer (`tokenizer.ggml.pre`), which cannot be read
off a Hugging Face tokenizer reliably.
"""

from __future__ import annotations

import collections
import functools
import json
import math
from pathlib import Path

import torch

from ..common.errors import ModelLoadError
from ..model.families import FAMILIES
from ..model.load import bundled_gguf, bundled_tokenizer
from .errors import ExportError, UnsupportedExportError
from .tensors import plain_items

# HF model types we can write as GGUF, and the llama.cpp architecture each becomes: each
# family's adapter says (llama.cpp runs Mistral as llama: same tensors, same rotary layout).
GGUF_ARCHITECTURES = {mt: f.gguf for f in FAMILIES for mt in f.model_types if f.gguf}


def write_gguf(model, out: Path, dtype: str, meta: dict, edit, source: Path) -> dict[str, int]:
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


def check_gguf_supported(model) -> None:
    config = model.hf.config
    mt = model.arch.model_type
    if mt not in GGUF_ARCHITECTURES:
        raise UnsupportedExportError(
            f"GGUF export supports only these model types: {', '.join(GGUF_ARCHITECTURES)}; this "
            f"model is {mt!r}: export it with format='hf' or 'safetensors', which work for every "
            "supported family (llama.cpp's convert_hf_to_gguf.py can convert an 'hf' export)."
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


def gguf_tokenizer_source(model) -> Path:
    """The GGUF whose tokenizer.* fields the export copies (see the module docstring)."""
    if _is_gguf_source(model):
        return Path(model.source["path"])

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
    # Each head's rows go from (half, i) order to (i, half): rows i and i + d_head/2, which
    # rotate together, end up side by side.
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
