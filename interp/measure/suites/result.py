"""`SuiteResult`: one suite's per-item frame, summary, breakdown tables and provenance.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...common.errors import EmptyPromptSetError
from ...common.io import atomic_dir
from .errors import SuiteError


@dataclass
class SuiteResult:
    """One suite's scores: `frame` (one row per item, with its log-likelihoods and preferences),
    `summary` (numbers; a mean over items has `<key>_lo`/`<key>_hi`, its 95% bootstrap CI),
    `tables` (breakdowns, e.g. per bias type or occupation) and `meta` (model, options)."""

    name: str
    frame: pd.DataFrame
    summary: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def summary_frame(self) -> pd.DataFrame:
        """One row per summary number: value, and lo/hi where it has an interval."""
        rows = []
        for key, value in self.summary.items():
            if key.endswith(("_lo", "_hi")) and key[:-3] in self.summary:
                continue
            rows.append({"metric": key, "value": value,
                         "lo": self.summary.get(f"{key}_lo", float("nan")),
                         "hi": self.summary.get(f"{key}_hi", float("nan"))})
        return pd.DataFrame(rows).set_index("metric")

    def table(self) -> str:
        """The summary as readable text: value [95% CI]."""
        s = self.summary_frame()

        def show(key, v, lo, hi):
            if key.startswith("n_"):
                return str(int(v))
            return f"{v:.3f}" if np.isnan(lo) or np.isnan(hi) else f"{v:.3f} [{lo:.3f}, {hi:.3f}]"

        shown = [show(*row) for row in zip(s.index, s["value"], s["lo"], s["hi"])]
        return pd.DataFrame({self.name: shown}, index=s.index).to_string()

    def save(self, directory: str | Path) -> Path:
        """Write items.csv, one CSV per table and result.json, all or nothing."""
        with atomic_dir(directory) as tmp:
            self.frame.to_csv(tmp / "items.csv", index=False)
            for name, table in self.tables.items():
                table.to_csv(tmp / f"table_{name}.csv", index=False)
            doc = {"name": self.name, "summary": _json_safe(self.summary),
                   "tables": list(self.tables), "meta": _json_safe(self.meta)}
            (tmp / "result.json").write_text(json.dumps(doc, indent=2))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> SuiteResult:
        directory = Path(directory)
        try:
            doc = json.loads((directory / "result.json").read_text())
            frame = pd.read_csv(directory / "items.csv", dtype={"id": str})  # ids are names
            tables = {n: pd.read_csv(directory / f"table_{n}.csv") for n in doc["tables"]}
        except (OSError, ValueError, KeyError) as e:
            raise SuiteError(f"{directory} holds no readable saved suite result ({e}); pass a "
                             "directory written by SuiteResult.save") from e
        summary = {k: float("nan") if v is None else v for k, v in doc["summary"].items()}
        return cls(doc["name"], frame, summary, tables, doc.get("meta", {}))


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)  # JSON has no NaN
    return obj


def suite_meta(model, suite: str, **options) -> dict:
    return {"suite": suite, "model": model.name, "fingerprint": model.fingerprint(), **options}


def require_rows(frame: pd.DataFrame, suite: str) -> None:
    if len(frame) == 0:
        raise EmptyPromptSetError(f"no {suite} items to score: the frame is empty")
