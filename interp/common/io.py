"""Atomic file and directory writes: a failure leaves the old output, or none, never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    """Where interp keeps what it can recompute (statistics, samples, converted GGUF files):
    $INTERP_CACHE, else ~/.cache/interp."""
    return Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp"))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_plainly_made(tmp: str | Path, directory: bool = False) -> None:
    """Give a temporary file (mkstemp: 0600) or directory (mkdtemp: 0700) the mode a plain
    open() or mkdir() would have given it, so that results are as readable as any other file."""
    os.chmod(tmp, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path` for a writer that wants a file name; it becomes
    `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _as_plainly_made(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w"):
    """Open a temporary file beside `path`; move it over `path` only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


@contextlib.contextmanager
def atomic_dir(path: str | Path):
    """Yield a temporary directory beside `path`; it replaces `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _as_plainly_made(tmp, directory=True)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:  # e.g. Ctrl-C between the two renames: the old result back
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_csv_columns(path, columns, what: str, error=None):
    """A CSV read whole (no NA guessing) that has at least `columns` and one row; anything else
    raises `error` (an InterpError class) in one line naming the file and what it lacks."""
    import pandas as pd

    from .errors import EmptyPromptSetError, InterpError

    error = error or InterpError
    try:
        frame = pd.read_csv(path, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise error(f"cannot read {path} as a {what} CSV: {str(e).splitlines()[0]}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise error(f"{path} is not a {what} CSV: no column {missing[0]!r} (it needs "
                    f"{', '.join(columns)}; it has {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise EmptyPromptSetError(f"{path} holds no {what} rows")
    return frame
