"""`interp.verify`: re-run a trace with an edit applied and evaluate before and after.

An edit is only trusted when three things hold: the indirect effect at the sites it targeted
shrank (the re-trace, with the same spec as the trace that located them), the bias suites moved
toward zero, and the capability suites stayed where they were.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from ..common.io import atomic_dir
from ..locate.result import TraceComparison, TraceResult
from ..locate.trace import trace
from ..measure.capability import next_token_logprobs
from ..measure.evaluate import DEFAULT_SUITES, EvalReport, comparison_table, evaluate
from ..measure.prompts import from_records
from .keys import SITE_TOKEN
from .sites import trace_for_sites


class Verification:
    """Before/after traces, their comparison, and before/after evaluation reports."""

    def __init__(self, before_trace: TraceResult, after_trace: TraceResult,
                 before: EvalReport, after: EvalReport, edit_meta: dict):
        self.before_trace, self.after_trace = before_trace, after_trace
        self.before, self.after, self.edit_meta = before, after, edit_meta

    @functools.cached_property
    def comparison(self) -> TraceComparison:
        return self.before_trace.compare(self.after_trace)

    def sites(self) -> pd.DataFrame:
        """The located sites before and after: the MLP at the edited token (the last subject
        token, or the last token for an edit at that site) in every edited layer, and the
        strongest attention layers at the last token."""
        f = self.comparison.frame
        layers = self.edit_meta.get("layers", [])
        mlp = f[(f.kind == "mlp") & (f.token_group == self.edited_token)
                & f.layer.isin(layers)]
        attn = f[(f.kind == "attn") & (f.token_group == "last token")]
        attn = attn.sort_values("before", ascending=False).head(3)
        out = pd.concat([mlp, attn])[["kind", "layer", "token_group", "before", "after",
                                      "difference"]]
        out["relative"] = out["difference"] / out["before"].abs()
        return out.reset_index(drop=True)

    @property
    def edited_token(self) -> str:
        """The token group the edit's keys were read at."""

        return SITE_TOKEN[self.edit_meta.get("site", "subject")]

    def table(self) -> str:
        s = self.sites()
        edited = s[s.kind == "mlp"]
        lines = ["Indirect effects at the located sites (oriented, metric units):",
                 s.to_string(index=False, float_format=lambda x: f"{x:.4f}"), ""]
        if len(edited):
            lines.append(f"MLP effect at the {self.edited_token} summed over edited layers: "
                         f"{edited.before.sum():.4f} → {edited.after.sum():.4f}")
            lines.append("")
        lines += ["Suites before and after:", comparison_table(self.before, self.after)]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Verification(edit layers {self.edit_meta.get('layers')})"

    def plot(self):
        """Before, after and difference heatmaps of the re-trace."""
        return self.comparison.plot()

    def save(self, directory: str | Path) -> Path:
        with atomic_dir(directory) as tmp:
            self.before_trace.save(tmp / "trace_before")
            self.after_trace.save(tmp / "trace_after")
            self.before.save(tmp / "eval_before")
            self.after.save(tmp / "eval_after")
            self.comparison.frame.to_csv(tmp / "trace_comparison.csv", index=False)
            self.before.compare(self.after).to_csv(tmp / "eval_comparison.csv", index=False)
            (tmp / "edit.json").write_text(json.dumps(self.edit_meta, indent=2, default=str))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> "Verification":
        d = Path(directory)
        return cls(TraceResult.load(d / "trace_before"), TraceResult.load(d / "trace_after"),
                   EvalReport.load(d / "eval_before"), EvalReport.load(d / "eval_after"),
                   json.loads((d / "edit.json").read_text()))


def prompts_of(model, trace_result: TraceResult):
    """The traced prompts, rebuilt from the result's own table (same order, same subjects)."""

    cols = [c for c in ("text", "subject", "stereotypical", "slot", "group", "declared")
            if c in trace_result.prompts]
    records = trace_result.prompts[cols].to_dict("records")
    for r in records:
        for key in cols[2:]:
            if r.get(key) is None or (not isinstance(r[key], str) and pd.isna(r[key])):
                r.pop(key, None)
    return from_records(model, records, name="traced")


def verify(model, edit, trace_result: TraceResult, *, suites: Sequence[str] = DEFAULT_SUITES,
           files: Mapping[str, str | Path] | None = None, occupations=None, n_boot: int = 1000,
           seed: int = 0, progress: bool | None = None) -> Verification:
    """Re-trace `trace_result`'s prompts with its spec and `edit` applied, and evaluate the model
    before and after (the after report adds the KL to the unedited model). The model is left as
    it was."""

    if trace_result.spec.get("fingerprint") not in (None, "", model.fingerprint()):
        warnings.warn("the trace was run on other weights than this model's; its 'before' "
                      "effects may not describe this model", stacklevel=2)
    prompts = prompts_of(model, trace_result)
    kw = dict(files=files, occupations=occupations, n_boot=n_boot, seed=seed, progress=progress)
    before = evaluate(model, suites, **kw)
    reference = next_token_logprobs(model)
    with edit.applied(model):
        after_trace = trace(model, prompts, spec=trace_result.spec, progress=progress)
        after = evaluate(model, (*suites, "kl"), reference=reference, **kw)
    return Verification(trace_result, after_trace, before, after, dict(edit.meta))


def verify_edit(model, edit, prompts, *, located: TraceResult | None = None, seed: int = 0,
                progress: bool | None = None, contrast=None, **kw) -> Verification:
    """`verify` against `located`, or, where no trace was made, the trace that chooses an
    edit's sites (`interp.mitigate.sites.trace_for_sites`) of `prompts` at the edit's site
    (on `contrast`'s lean where one is given): what `interp edit --verify` and
    `interp debias --verify` run. kw: `verify`'s."""
    if located is None:
        located = trace_for_sites(model, prompts, edit.meta.get("site", "last"), seed=seed,
                                  progress=progress, contrast=contrast)
    return verify(model, edit, located, seed=seed, progress=progress, **kw)
