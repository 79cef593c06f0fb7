"""Checks of the files and options a command was given, made before it loads a model or computes
anything: a mistake costs a second and one line, not a model load and minutes of forward passes.

Each check raises `InputError` with one line that names the file (and line or field) and says
what to do; the command line turns it into exit code 2. The checks read a file the way its
loader does (the loaders need no model), so a file that passes here loads later.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .common.errors import InputError, InterpError
from .measure.prompts import BUILTIN_SETS, read_jsonl


def _again(e: Exception) -> InputError:
    return e if isinstance(e, InputError) else InputError(str(e))


def choice(value: str, allowed, option: str) -> str:
    if value not in allowed:
        raise InputError(f"{option} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def choices(value: str, allowed, option: str) -> list[str]:
    """A comma list whose every entry is one of `allowed`."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise InputError(f"{option} is empty: give a comma list of {', '.join(allowed)}")
    for v in items:
        choice(v, allowed, f"{option} entry")
    return items


def at_least(value, low, option: str):
    if value is not None and value < low:
        raise InputError(f"{option} must be at least {low}, not {value}")
    return value


def positive(value, option: str):
    if value is not None and not value > 0:
        raise InputError(f"{option} must be greater than 0, not {value}")
    return value


def layers(text: str | None, arch, option: str) -> list[int] | None:
    """A comma list of layer indices, each inside the model (`arch` from `model.probe`)."""
    if text is None:
        return None
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if not re.fullmatch(r"-?\d+", part):
            raise InputError(f"{option}: {part!r} is not a layer number; give a comma list such "
                             f"as 3,4,5")
        layer = int(part)
        if not 0 <= layer < arch.n_layers:
            raise InputError(f"{option}: layer {layer} is outside the model ({arch.n_layers} "
                             f"layers: 0..{arch.n_layers - 1})")
        out.append(layer)
    if not out:
        raise InputError(f"{option} is empty: give a comma list of layers such as 3,4,5")
    return out


def model(spec: str | None):
    """The model's `Architecture` from its config alone (no weights are read)."""
    from .model.probe import probe

    try:
        return probe(spec)
    except InterpError as e:
        raise _again(e) from None


def file(path: Path | str, what: str, *, directory_ok: bool = False) -> Path:
    """An existing, non-empty file (or folder, where the format allows one)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file; check the path of the {what}")
    if path.is_dir():
        if directory_ok:
            return path
        raise InputError(f"{path} is a directory; pass the {what} file itself")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty; pass a {what} file with content")
    return path


def prompt_sets(names: str, *, one: bool = False, option: str = "--prompts") -> None:
    """A comma list of built-in prompt sets and JSONL files (each file read and checked)."""
    given = [n.strip() for n in names.split(",") if n.strip()]
    if not given:
        raise InputError(f"{option} is empty: give {', '.join(BUILTIN_SETS)} or a JSONL file")
    if one and len(given) != 1:
        raise InputError(f"{option} takes one prompt set here, not {len(given)}")
    for name in given:
        if name in BUILTIN_SETS:
            continue
        if not Path(name).expanduser().is_file() and not name.endswith(".jsonl"):
            raise InputError(f"{option}: unknown prompt set {name!r}; use "
                             f"{', '.join(BUILTIN_SETS)} or a JSONL file with 'text' and "
                             "'subject' on each line")
        try:
            read_jsonl(Path(name).expanduser())
        except InterpError as e:
            raise _again(e) from None


_REPR_TENSOR = re.compile(r"^layer(\d+)\.(V|u|center)$")


def edit_file(path: Path | str | None, arch, *, representation_ok: bool = False) -> str | None:
    """An edit file's header: written by interp (an `Edit`, or a `RepresentationEdit` where
    allowed), and made for a model of `arch`'s shapes (layers inside it, widths equal). The
    fingerprint of the exact weights is checked when the model is loaded, before any compute.
    Returns "edit" or "representation"."""
    if path is None:
        return None
    from safetensors import safe_open

    from .mitigate.edit import TENSOR_NAME

    path = file(path, "edit")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise InputError(f"{path} is not a safetensors edit file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else 'unreadable'}); pass a file "
                         "written by `interp edit` (edit.safetensors)") from None
    kind = ("edit" if "interp_edit" in meta else
            "representation" if "interp_representation_edit" in meta else None)
    if kind is None or (kind == "representation" and not representation_ok):
        what = ("a representation edit (AlignEZ's residual hook): this command takes a weight "
                "edit (edit.safetensors)" if kind else
                "not an interp edit file (its header has no interp_edit metadata): pass a file "
                "written by `interp edit`, `interp dpo` or `interp alignez`")
        raise InputError(f"{path} is {what}")
    try:
        info = json.loads(meta["interp_edit" if kind == "edit" else "interp_representation_edit"])
    except json.JSONDecodeError:
        raise InputError(f"{path}: its interp metadata is not valid JSON; the file is damaged, "
                         "fit the edit again") from None
    fitted_on = info.get("model", "another model") if isinstance(info, dict) else "another model"
    widths = {"mlp": {arch.d_model, arch.d_mlp}, "attn": {arch.d_model, arch.n_heads * arch.d_head}}
    pattern = TENSOR_NAME if kind == "edit" else _REPR_TENSOR
    for name, shape in shapes.items():
        m = pattern.match(name)
        if m is None:
            raise InputError(f"{path} holds a tensor {name!r} that is not an edit factor; pass a "
                             "file written by interp")
        layer = int(m.group(2) if kind == "edit" else m.group(1))
        if layer >= arch.n_layers:
            raise InputError(f"{path} edits layer {layer}, but this model has {arch.n_layers} "
                             f"layers: it was made for {fitted_on}; fit an edit on this model")
        if kind == "edit":
            ok = len(shape) == 2 and shape[0] in widths[m.group(1) or "mlp"]
        else:
            ok = shape[0] == arch.d_model
        if not ok:
            raise InputError(f"{path}: tensor {name} has shape {list(shape)}, which does not fit "
                             f"this model (d_model {arch.d_model}, d_mlp {arch.d_mlp}): it was "
                             f"made for {fitted_on}; fit an edit on this model")
    return kind


def loaded(reader, *args, **kw):
    """Run a model-free loader now, so its complaint comes before the model loads."""
    try:
        return reader(*args, **kw)
    except InterpError as e:
        raise _again(e) from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InputError(f"{args[0] if args else 'input'}: {e}") from None


def csv_columns(path: Path | str, columns, what: str):
    """A CSV with at least these columns (and one row)."""
    from .common.io import read_csv_columns

    try:
        return read_csv_columns(file(path, what), columns, what, InputError)
    except InterpError as e:
        raise _again(e) from None
