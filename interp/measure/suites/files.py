"""Finding and reading benchmark files, with errors that say what the file should look like.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .errors import FORMATS, SuiteError, SuiteFormatError


def find_file(path: str | Path, name: str) -> Path | None:
    """`path` itself if it is a file; else `name` in the directory `path`, or the shallowest
    copy of it below (the benchmark repos keep data in subfolders)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if not p.is_dir():
        return None
    if (p / name).is_file():
        return p / name
    found = sorted(p.rglob(name), key=lambda f: (len(f.parts), str(f)))
    return found[0] if found else None


def missing_file(path, suite: str, name: str) -> SuiteFormatError:
    p = Path(path).expanduser()
    where = "does not exist" if not p.exists() else f"holds no file named {name}"
    return SuiteFormatError(f"{suite}: {p} {where}. Expected {FORMATS[suite]}.")


def read_text(file: Path, suite: str) -> str:
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise SuiteFormatError(f"{suite}: {file} is not UTF-8 text ({e}). "
                               f"Expected {FORMATS[suite]}.") from e
    if not text.strip():
        raise SuiteFormatError(f"{suite}: {file} is empty. Expected {FORMATS[suite]}.")
    return text


def read_table(file: Path, suite: str, required: Iterable[str], sep: str) -> pd.DataFrame:
    read_text(file, suite)  # empty / undecodable files get the clearer message
    try:
        # keep_default_na=False: a sentence reading "None" or "NA" is text, not missing
        df = pd.read_csv(file, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, ValueError) as e:
        raise SuiteFormatError(f"{suite}: could not parse {file}: {e}. "
                               f"Expected {FORMATS[suite]}.") from e
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SuiteFormatError(f"{suite}: {file} lacks the column(s) {missing} (it has "
                               f"{list(df.columns)[:8]}). Expected {FORMATS[suite]}.")
    if len(df) == 0:
        raise SuiteFormatError(f"{suite}: {file} has a header but no rows. "
                               f"Expected {FORMATS[suite]}.")
    return df


def blank_cells(df: pd.DataFrame, columns: Iterable[str]) -> list[int]:
    return [i for i in range(len(df)) if any(not str(df[c].iat[i]).strip() for c in columns)]


def pick_rows(df: pd.DataFrame, column: str, wanted, suite: str) -> pd.DataFrame:
    """Rows whose `column` is in `wanted` (a value or several); None keeps all."""
    if wanted is None:
        return df
    wanted = [wanted] if isinstance(wanted, (str, int)) else list(wanted)
    available = sorted(df[column].astype(str).unique())
    unknown = [w for w in wanted if str(w) not in available]
    if unknown:
        raise SuiteError(f"{suite}: no {column} {unknown} in this file; it has {available}")
    return df[df[column].astype(str).isin([str(w) for w in wanted])].reset_index(drop=True)
