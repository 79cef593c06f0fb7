"""`TraceResult`: the table of a trace, its spec, and the views researchers look at.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..common.errors import InterpError
from ..common.io import atomic_dir
from .groups import TOKEN_GROUPS, token_group
from .plots import comparison_figure, trace_figure
from .spec import KINDS


class TraceResult:
    """One row per prompt and cell (`frame`), one row per prompt (`prompts`), and the spec.

    Effects are `patched − corrupt` in the metric's units. Views that average over prompts
    (`grouped`, `plot`, `top_sites`, `suggest_layers`) first orient each prompt's effects by the
    sign of its total effect (clean − corrupt), so that + always means "restores the clean
    prompt's outcome" whether that outcome leans he or she.
    """

    def __init__(self, frame: pd.DataFrame, prompts: pd.DataFrame, spec: dict):
        self.frame, self.prompts, self.spec = frame, prompts, spec
        # What this run computed, in block-tokens (one block over one token): the grid's
        # minimum and what the engine executed. Not saved: it describes a run, not a result.
        self.cost: dict = {}

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def build(cls, prompt_set, inputs, cells, clean_m, corrupt_m, patched, spec, nie=None):
        rows_prompt = cells.prompt
        plist = list(prompt_set)
        tokens = [p.tokens for p in plist]
        frame = pd.DataFrame({
            "prompt_id": rows_prompt,
            "text": [plist[i].text for i in rows_prompt],
            "kind": np.asarray(KINDS)[cells.kind],
            "layer": cells.layer,
            "position": cells.position,
            "head": pd.array(np.where(cells.head >= 0, cells.head, -1), dtype="Int64"),
            "token": [tokens[i][p] for i, p in zip(rows_prompt, cells.position)],
            "token_group": [token_group(int(p), plist[i].subject_span, len(tokens[i]))
                            for i, p in zip(rows_prompt, cells.position)],
            "clean": clean_m[rows_prompt],
            "corrupt": corrupt_m[rows_prompt],
            "patched": patched,
        })
        frame.loc[frame["head"] < 0, "head"] = pd.NA
        frame["effect"] = frame["patched"] - frame["corrupt"]
        if nie is not None:
            frame["nie"] = nie
            frame["nde"] = frame["patched"] - frame["clean"]
        prompts = pd.DataFrame({
            "prompt_id": range(len(plist)),
            "text": [p.text for p in plist],
            "subject": [p.subject for p in plist],
            "tokens": [list(t) for t in tokens],
            "subject_start": [p.subject_span[0] for p in plist],
            "subject_end": [p.subject_span[1] for p in plist],
            "stereotypical": [p.stereotypical for p in plist],
            **({} if "contrast" not in spec.to_dict() else {
                "slot": [p.slot for p in plist], "group": [p.group for p in plist],
                "declared": [p.declared for p in plist]}),
            "corrupt_text": inputs.corrupt_texts,
            "clean": clean_m,
            "corrupt": corrupt_m,
        })
        prompts["total_effect"] = prompts["clean"] - prompts["corrupt"]
        return cls(frame, prompts, spec.to_dict())

    # -- tables --------------------------------------------------------------------------------

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def __repr__(self) -> str:
        s = self.spec
        return (f"TraceResult({len(self.prompts)} prompts, {len(self.frame)} cells, kinds="
                f"{','.join(s['kinds'])}, corruption={s['corruption']['type']}, "
                f"metric={s['metric']}, window={s['window']}, method={s['method']}"
                + (": a linear approximation of the exact effects)" if s["method"] == "attribution"
                   else ")"))

    def orientation(self) -> pd.Series:
        """Per prompt: the sign of its total effect (+1 where it is 0)."""
        sign = np.sign(self.prompts["total_effect"].to_numpy())
        return pd.Series(np.where(sign == 0, 1.0, sign), index=self.prompts["prompt_id"])

    def oriented(self, orientation: pd.Series | None = None) -> pd.DataFrame:
        f = self.frame.copy()
        o = (orientation if orientation is not None else self.orientation())
        f["oriented"] = f["effect"] * f["prompt_id"].map(o).to_numpy()
        return f

    def grouped(self, orientation: pd.Series | None = None) -> pd.DataFrame:
        """Mean oriented effect per (kind, layer, token group[, head]) with a 95% interval
        (normal approximation over prompts)."""
        f = self.oriented(orientation)
        f["head"] = f["head"].fillna(-1)
        per_prompt = (f.groupby(["kind", "layer", "token_group", "head", "prompt_id"],
                                observed=True)["oriented"].mean().reset_index())
        g = per_prompt.groupby(["kind", "layer", "token_group", "head"], observed=True)["oriented"]
        out = g.agg(effect="mean", sd="std", n="count").reset_index()
        half = 1.96 * out["sd"].fillna(0) / np.sqrt(out["n"])
        out["ci_lo"], out["ci_hi"] = out["effect"] - half, out["effect"] + half
        out["head"] = out["head"].astype(int).replace(-1, pd.NA).astype("Int64")
        order = {g: i for i, g in enumerate(TOKEN_GROUPS)}
        out["_g"] = out["token_group"].map(order)
        return out.sort_values(["kind", "layer", "_g", "head"]).drop(columns=["_g", "sd"])\
                  .reset_index(drop=True)

    def top_sites(self, k: int = 10, kind: str | None = None) -> pd.DataFrame:
        """The k (kind, layer, token group[, head]) sites with the largest mean oriented effect."""
        g = self.grouped()
        if kind is not None:
            g = g[g["kind"] == kind]
        return g.sort_values("effect", ascending=False).head(k).reset_index(drop=True)

    def layer_profile(self, kind: str = "mlp", group: str = "last subject token") -> pd.Series:
        """Mean oriented effect per layer of one kind at one token group."""
        g = self.grouped()
        g = g[(g["kind"] == kind) & (g["token_group"] == group)]
        if g.empty:
            raise InterpError(f"the trace has no {kind!r} cells at the {group!r}; kinds traced: "
                              f"{self.spec['kinds']}")
        return g.groupby("layer")["effect"].mean()

    def suggest_layers(self, kind: str = "mlp", width: int = 5,
                       group: str = "last subject token") -> list[int]:
        """The band of `width` consecutive layers where the effect of `kind` at `group` is
        strongest (largest sum): the layers an LSDM edit should change."""
        profile = self.layer_profile(kind, group)
        values = profile.reindex(range(int(profile.index.max()) + 1), fill_value=0.0).to_numpy()
        width = max(1, min(width, len(values)))
        sums = np.convolve(values, np.ones(width), mode="valid")
        start = int(np.argmax(sums))
        return list(range(start, start + width))

    def compare(self, other: "TraceResult") -> "TraceComparison":
        """Before (self) vs after (other), both oriented by self's total effects."""
        o = self.orientation()
        keys = ["kind", "layer", "token_group", "head"]
        a = self.grouped(o)[keys + ["effect"]].rename(columns={"effect": "before"})
        b = other.grouped(o.reindex(other.prompts["prompt_id"]).fillna(1.0))[keys + ["effect"]]
        merged = a.merge(b.rename(columns={"effect": "after"}), on=keys, how="outer")
        merged["difference"] = merged["after"] - merged["before"]
        return TraceComparison(merged, self.spec, other.spec)

    # -- persistence ---------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """A directory with cells.csv, prompts.json and spec.json, written atomically."""
        with atomic_dir(directory) as tmp:
            self.frame.to_csv(tmp / "cells.csv", index=False)
            self.prompts.to_json(tmp / "prompts.json", orient="records", indent=1)
            (tmp / "spec.json").write_text(json.dumps(self.spec, indent=2))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> "TraceResult":
        directory = Path(directory)
        frame = pd.read_csv(directory / "cells.csv", dtype={"head": "Int64"},
                            keep_default_na=False, na_values={"head": [""]})
        prompts = pd.read_json(directory / "prompts.json", orient="records")
        return cls(frame, prompts, json.loads((directory / "spec.json").read_text()))

    # -- figures -------------------------------------------------------------------------------

    def plot(self, prompt_id: int | None = None):
        return trace_figure(self, prompt_id)


class TraceComparison:
    """Before/after effects per (kind, layer, token group[, head]) and their difference."""

    def __init__(self, frame: pd.DataFrame, before_spec: dict, after_spec: dict):
        self.frame, self.before_spec, self.after_spec = frame, before_spec, after_spec

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def plot(self):
        return comparison_figure(self)
