"""`CapabilityResult` (one suite's headline number with its interval, and its items) and
`CapabilityReport` (several suites for one model).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ...common.io import atomic_dir


@dataclass
class CapabilityResult:
    """One suite's headline number with its 95% bootstrap interval, and one row per item.

    n counts the units the bootstrap resamples (facts, text chunks, prompts); `extra` holds
    secondary numbers (e.g. mean log p(answer), tokens scored)."""

    name: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    items: pd.DataFrame
    extra: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def row(self) -> dict:
        return {"suite": self.name, "metric": self.metric, "value": self.value,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n, **self.extra}

    def to_frame(self) -> pd.DataFrame:
        """The per-item rows (facts, chunks or prompts)."""
        return self.items.copy()

    def __repr__(self) -> str:
        return (f"CapabilityResult({self.name}: {self.metric} {self.value:.4g} "
                f"[{self.ci_low:.4g}, {self.ci_high:.4g}], n={self.n})")

    def save(self, directory: str | Path) -> Path:
        with atomic_dir(directory) as tmp:
            self._write(tmp)
        return Path(directory)

    def _write(self, directory: Path) -> None:
        self.items.to_csv(directory / "items.csv", index=False)
        head = {k: getattr(self, k) for k in ("name", "metric", "value", "ci_low", "ci_high", "n",
                                              "extra", "meta")}
        (directory / "result.json").write_text(json.dumps(head, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "CapabilityResult":
        directory = Path(directory)
        head = json.loads((directory / "result.json").read_text())
        return cls(items=pd.read_csv(directory / "items.csv"), **head)


class CapabilityReport:
    """Several suites' results for one model; `table()` has one row per suite."""

    def __init__(self, results: Sequence[CapabilityResult], meta: dict | None = None):
        self.results = {r.name: r for r in results}
        self.meta = meta or {}

    def __getitem__(self, name: str) -> CapabilityResult:
        return self.results[name]

    def __repr__(self) -> str:
        return f"CapabilityReport({self.meta.get('model', '?')}: {', '.join(self.results)})"

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([r.row() for r in self.results.values()]).set_index("suite")

    def to_frame(self) -> pd.DataFrame:
        """Every suite's per-item rows, stacked, with a `suite` column."""
        return pd.concat([r.items.assign(suite=name) for name, r in self.results.items()],
                         ignore_index=True)

    def save(self, directory: str | Path) -> Path:
        with atomic_dir(directory) as tmp:
            for name, r in self.results.items():
                (tmp / name).mkdir()
                r._write(tmp / name)
            self.table().to_csv(tmp / "table.csv")
            (tmp / "meta.json").write_text(json.dumps(
                {**self.meta, "suites": list(self.results)}, indent=2))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> "CapabilityReport":
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        suites = meta.pop("suites")
        return cls([CapabilityResult.load(directory / s) for s in suites], meta)


def model_meta(model) -> dict:
    return {"model": model.name, "fingerprint": model.fingerprint()}
