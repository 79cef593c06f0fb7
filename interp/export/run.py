"""`export()`: write a model in one format, check the written copy in a fresh process, and only then
move it into place.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from pathlib import Path

from ..common.io import atomic_dir, atomic_path
from ..common.version import __version__
from ..mitigate.edit import Edit
from .card import model_card
from .check import verify_export
from .errors import ExportError
from .gguf_file import check_gguf_supported, gguf_tokenizer_source, write_gguf
from .hf import write_hf
from .result import DTYPES, FORMATS, ExportResult
from .safetensors_file import write_safetensors

DEFAULT_PROMPTS = (
    "The nurse said that",
    "The capital of France is",
    "The engineer told the client that",
    "Once upon a time, there was a",
)


def export(model, path: str | os.PathLike, format: str = "hf", *, dtype: str = "f32", edit=None,
           verify: bool = True, prompts=None) -> ExportResult:
    """Write `model` to `path` and (verify=True) check the export in a fresh process.

    format: "hf" (a directory `AutoModelForCausalLM.from_pretrained` loads, with tokenizer, a
    model card and the edit), "safetensors" (one file, plain HF names, provenance in its
    metadata) or "gguf" (one file for llama.cpp; llama-family models only).
    dtype: "f32" or "f16"; GGUF also "q8_0" (norms stay f32; tensors whose rows are not a multiple
    of 32 fall back to f16).
    edit: the `interp.Edit` whose provenance to record. If it is applied to `model` the
    weights are exported as they are; if `model` is the model it was fitted on, it is applied
    for the export and reverted after.
    prompts: texts (or Prompts) to compare logits on; default DEFAULT_PROMPTS.

    Raises VerificationError (and writes nothing) when an f32 export differs by more than
    F32_TOLERANCE from the model."""
    _check_request(format, dtype)
    if edit is not None and not isinstance(edit, Edit):
        raise ExportError(
            f"edit must be an interp.Edit (a weight change), not {type(edit).__name__}: a "
            "steering edit acts through a hook at inference, so exported weights would not "
            "carry it. Export a weight edit (lsdm, finetune, project), or none.")
    texts = _prompt_texts(prompts)
    path = Path(path)
    if format == "gguf":
        check_gguf_supported(model)
    source = gguf_tokenizer_source(model) if format == "gguf" else None
    atomic = _atomic(format, path)
    with _edit_in_place(model, edit) as applied_here:
        meta = provenance(model, edit, format=format, dtype=dtype, applied_here=applied_here)
        with atomic(path) as tmp:
            tensor_types = WRITERS[format](model, tmp, dtype, meta, edit, source)
            result = ExportResult(path=path, format=format, dtype=dtype, size_bytes=0,
                                  fingerprint=meta["fingerprint"], prompts=tuple(texts),
                                  tensor_types=tensor_types or {})
            if verify:
                verify_export(model, tmp, result)
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


WRITERS = {"hf": write_hf, "safetensors": write_safetensors, "gguf": write_gguf}
