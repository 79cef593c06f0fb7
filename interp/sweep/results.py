"""The results of a sweep: the table rebuilt from the finished cells, and `SweepResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..common.errors import InterpError
from ..common.io import atomic_write
from .config import load_toml
from .grid import Cell, read_done

INT_COLUMNS = {"window", "samples", "top_layer", "mlp_peak_layer", "attn_peak_layer",
               "n_prompts", "n_skipped"}


def write_results(out: Path, cells: list[Cell]) -> pd.DataFrame:
    """Rebuild out/results.csv from the done.json of every finished cell of the grid."""
    rows = []
    for cell in cells:
        done = read_done(out, cell)
        if done is None:
            continue
        row = {"cell": cell.id, "type": cell.kind, "status": done.get("status", "done"),
               **cell.columns(), **done.get("metrics", {}), "seconds": done.get("seconds")}
        if done.get("error"):
            row["error"] = done["error"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    with atomic_write(out / "results.csv") as f:
        frame.to_csv(f, index=False)
    return frame


@dataclass
class SweepResult:
    """The tidy table of a sweep (one row per finished cell) and where its artefacts lie."""

    frame: pd.DataFrame
    out: Path
    config: dict = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, out_dir) -> SweepResult:
        from pandas.errors import EmptyDataError

        out = Path(out_dir)
        if not (out / "results.csv").is_file():
            raise InterpError(f"no sweep results at {out}: results.csv is missing")
        try:
            frame = pd.read_csv(out / "results.csv")
        except EmptyDataError:  # a sweep with no finished cell yet
            frame = pd.DataFrame()
        for column in INT_COLUMNS & set(frame.columns):  # CSV made them float where NaN
            frame[column] = frame[column].astype("Int64")
        config = {}
        if (out / "config.toml").is_file():
            config = load_toml(out / "config.toml")[0]
        return cls(frame, out, config)

    def cell_dir(self, cell_id: str) -> Path:
        return self.out / "cells" / cell_id

    def summary(self) -> str:
        """A readable report: counts, then one table for traces and one for edits."""
        f = self.frame
        if f.empty:
            return f"sweep {self.out}: no finished cells"
        failed = f[f["status"] != "done"]
        counts = (f"{(f['type'] == 'trace').sum()} traces, {(f['type'] == 'edit').sum()} edits"
                  + (f", {len(failed)} failed" if len(failed) else ""))
        parts = [f"sweep {self.out}: {len(f)} cells finished ({counts})"]
        parts += _trace_summary(f[(f["type"] == "trace") & (f["status"] == "done")])
        parts += _edit_summary(f[(f["type"] == "edit") & (f["status"] == "done")])
        if len(failed):
            parts.append("\nFailed cells (delete cells/<id>/ to retry):")
            parts += [f"  {r.cell} {r.type}: {r.error}" for r in failed.itertuples()]
        return "\n".join(parts)


def _table_text(frame: pd.DataFrame, columns: list[str]) -> str:
    shown = frame[[c for c in columns if c in frame.columns]].dropna(axis=1, how="all")
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _trace_summary(f: pd.DataFrame) -> list[str]:
    if f.empty:
        return []
    columns = ["cell", "prompts", "contrast", "corruption", "kinds", "window", "samples",
               "top_kind",
               "top_layer", "top_token_group", "top_effect", "mlp_peak_layer",
               "mlp_peak_effect", "attn_peak_layer", "attn_peak_effect"]
    return ["\nTraces (peaks: MLP at the last subject token, attention at the last token):",
            _table_text(f, columns)]


def _edit_summary(f: pd.DataFrame) -> list[str]:
    if f.empty:
        return []
    measures = [c[: -len("_after")] for c in f.columns
                if c.endswith("_after") and not c.startswith("target_")]
    before = [f"{m} {f[m + '_before'].iloc[0]:.3f}" for m in measures
              if f"{m}_before" in f.columns and pd.notna(f[m + "_before"].iloc[0])]
    columns = ["cell", "layers", "lam"]
    for m in measures:
        columns += [f"{m}_after"] + ([f"{m}_change"] if f"{m}_change" in f.columns else [])
    return ["\nEdits (before any edit: " + ", ".join(before) + "; change = relative):",
            _table_text(f, columns)]
