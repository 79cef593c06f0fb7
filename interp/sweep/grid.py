"""The grid: every cell of a sweep with its stable id, and whether a cell has finished.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from .config import SweepConfig, read_config


@dataclass(frozen=True)
class Cell:
    """One point of the grid. `params` holds everything that determines its result."""

    kind: str  # "trace" or "edit"
    params: dict

    @property
    def id(self) -> str:
        blob = json.dumps(self.params, sort_keys=True, separators=(",", ":"))
        return f"{self.kind}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def columns(self) -> dict:
        """The parameters that vary over the grid, flat, for the results table."""
        p = self.params
        if self.kind == "trace":
            return {"prompts": p["prompts"], "corruption": p["corruption"],
                    "kinds": ",".join(p["kinds"]), "window": p["window"],
                    "samples": p.get("samples"), "metric": p["metric"], "method": p["method"],
                    **({"contrast": p["contrast"]} if "contrast" in p else {})}
        return {"prompts": p["prompts"], "layers": ",".join(map(str, p["layers"])),
                "lam": p["lam"]}

    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.columns().items() if v is not None)


def grid(config, model_name: str | None = None) -> list[Cell]:
    """Every cell of the sweep, traces first, in a fixed order. model_name: the name of a model
    given in place of the config's (it is part of each cell's identity)."""
    cfg = read_config(config)
    name = model_name or cfg.model_name
    cells = []
    if cfg.trace:
        t = cfg.trace
        for ps, corruption, kinds, window in itertools.product(t["prompts"], t["corruptions"],
                                                               t["kinds"], t["windows"]):
            params = {"model": name, "seed": cfg.seed, "prompts": ps,
                      "prompt_set": cfg.prompts[ps], "corruption": corruption,
                      "kinds": list(kinds), "window": window, "metric": t["metric"],
                      "method": t["method"]}
            # Each corruption's own knob only: a swap cell does not change with `samples`.
            if corruption == "noise":
                params["samples"] = t["samples"]
            elif t["swap_words"]:
                params["swap_words"] = t["swap_words"]
            if t.get("contrast"):  # only when given: the he/she cells keep their ids
                params["contrast"] = t["contrast"]
            cells.append(Cell("trace", params))
    if cfg.edit:
        e = cfg.edit
        for layers, lam in itertools.product(e["layers"], e["lam"]):
            cells.append(Cell("edit", {
                "model": name, "seed": cfg.seed, "prompts": e["prompts"],
                "prompt_set": cfg.prompts[e["prompts"]], "layers": layers, "lam": lam,
                "options": e["options"], **edit_evaluation(cfg)}))
    # Spellings that normalise alike (lam 100 and 100.0, layers [1, 0] and [0, 1]) are one cell.
    return list({c.id: c for c in cells}.values())


def edit_evaluation(cfg: SweepConfig) -> dict:
    """What an edit is measured on: part of edit cells' identity and of the baseline's."""
    e = cfg.edit
    out = {"eval": {n: cfg.prompts[n] for n in e["eval"]}, "suites": e["suites"],
           "definitional": (None if e["definitional"] is None
                            else cfg.prompts[e["definitional"]]),
           "heldout_tokens": e["heldout_tokens"]}
    if e["options"].get("contrast"):  # measured on its lean too; he/she sweeps keep their ids
        out["contrast"] = e["options"]["contrast"]
    return out


def read_done(out: Path, cell: Cell) -> dict | None:
    """The cell's done.json if it is complete and belongs to this cell, else None."""
    try:
        done = json.loads((out / "cells" / cell.id / "done.json").read_text())
    except (OSError, ValueError):
        return None
    if done.get("id") != cell.id or done.get("params") != cell.params:
        return None
    return done
