"""Running a sweep: every cell without a valid done.json, one after another, sharing the model,
its prompt sets and the numbers before any edit.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..common.errors import InterpError, TokenizationError
from ..common.io import atomic_write
from ..locate import trace as tracing  # modules, so a patched function is the one used
from ..locate.corruption import Swap
from ..measure import capability as C
from ..measure import prompts as P
from ..measure.bias import bias as measure_bias
from ..measure.contrast import contrast as read_contrast
from ..measure.contrast import is_gender
from ..measure.evaluate import declared_rows
from ..mitigate import lsdm as fitting  # (looked up at each call)
from ..mitigate.lean import contrast_logprobs, lean_measures
from ..model.load import BUNDLED_NAME, load_model
from ..model.probe import probe
from .checks import SweepConfigError, is_kind
from .config import SweepConfig, read_config, save_config
from .grid import Cell, edit_evaluation, grid, read_done
from .results import SweepResult, write_results


def run_sweep(config, out_dir=None, *, model=None, progress: bool | None = None) -> SweepResult:
    """Run every cell of the sweep that has no valid done.json yet; returns the `SweepResult`.

    config: a TOML path or a dict (see configs/sweep_example.toml). out_dir: overrides the
    config's `out`. model: an already loaded model to use instead of loading the config's (its
    name goes into the cell ids). progress: False hides the progress bar over cells.
    `run_sweep_ray` runs the same cells on Ray workers."""
    cfg = read_config(config)
    out = resolve_out_dir(cfg, out_dir)
    cells = grid(cfg, model.name if model is not None else None)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.toml")
    pending = [c for c in cells if read_done(out, c) is None]
    if model is not None or pending:
        if model is None:
            check_against_model(cfg, probe(cfg.model), cfg.model or BUNDLED_NAME)
            model = load_sweep_model(cfg)
        check_against_model(cfg, model.arch, model.name)
        pending += stale_cells(out, cells, pending, model.fingerprint())
        pending.sort(key=cells.index)
    write_results(out, cells)
    if pending:
        run = SweepRun(cfg, model, out)
        bar = tqdm(total=len(cells), initial=len(cells) - len(pending), desc="sweep",
                   unit="cell", disable=progress is False)
        try:
            for cell in pending:
                bar.set_postfix_str(cell.label(), refresh=True)
                run.cell(cell)
                write_results(out, cells)
                bar.update()
        finally:
            bar.close()
    return SweepResult.load(out)


def resolve_out_dir(cfg: SweepConfig, out_dir) -> Path:
    if out_dir is not None:
        return Path(out_dir)
    if cfg.out is None:
        raise SweepConfigError("sweep config: no output directory: set out = \"runs/...\" in "
                               "the config or pass out_dir")
    return Path(cfg.out)


def load_sweep_model(cfg: SweepConfig):
    return load_model(cfg.model)


def check_against_model(cfg: SweepConfig, arch, name: str) -> None:
    """Grid values the model cannot take (`arch`: the loaded model's, or `probe`'s from its
    config), found before any cell runs rather than in each."""
    n = arch.n_layers
    if cfg.trace and max(cfg.trace["windows"]) > n:
        raise SweepConfigError(f"sweep config: trace.windows has {max(cfg.trace['windows'])}, "
                               f"but {name} has only {n} layers")
    if cfg.edit:
        top = max(max(c) for c in cfg.edit["layers"])
        if top >= n:
            raise SweepConfigError(f"sweep config: edit.layers has layer {top}, but {name} "
                                   f"has layers 0..{n - 1}")


def check_sweep(config, out_dir=None) -> SweepConfig:
    """The config read, every key checked, and its grid held to the model's shape, read from
    the model's config alone: what `interp sweep` does before it loads anything."""
    cfg = read_config(config)
    resolve_out_dir(cfg, out_dir)
    check_against_model(cfg, probe(cfg.model), cfg.model or BUNDLED_NAME)
    return cfg


def stale_cells(out: Path, cells: list[Cell], pending: list[Cell], fingerprint: str) -> list[Cell]:
    """Finished cells computed on other weights (a model file replaced under the same name)."""
    stale = [c for c in cells if c not in pending
             and read_done(out, c).get("fingerprint") not in (None, fingerprint)]
    if stale:
        warnings.warn(f"{len(stale)} finished cell(s) were computed on other weights than this "
                      f"model's ({fingerprint[:12]}); recomputing them", stacklevel=3)
    for c in stale:  # out of the results table from now on, even if the rerun stops early
        (out / "cells" / c.id / "done.json").unlink()
    return stale


class SweepRun:
    """One sweep run: the model, its prompt sets and its baseline, built once and shared."""

    def __init__(self, cfg: SweepConfig, model, out: Path):
        self.cfg, self.model, self.out = cfg, model, out
        self._sets: dict = {}
        self._baseline: dict | None = None
        self._reference = None

    def prompts(self, name: str):
        if name not in self._sets:
            self._sets[name] = build_prompt_set(self.model, name, self.cfg.prompts[name],
                                                self.cfg.seed)
        return self._sets[name]

    def cell(self, cell: Cell) -> None:
        directory = self.out / "cells" / cell.id
        shutil.rmtree(directory, ignore_errors=True)  # a killed run's partial artefacts
        directory.mkdir(parents=True)
        start = time.time()
        record = {"id": cell.id, "type": cell.kind, "params": cell.params,
                  "fingerprint": self.model.fingerprint()}
        try:
            metrics = (self._trace if cell.kind == "trace" else self._edit)(cell, directory)
            record.update(status="done", metrics=metrics)
        except InterpError as e:
            # A cell the method cannot compute (an ill-conditioned λ, no swappable prompt) is a
            # result of the sweep, not a crash: it is recorded and the sweep goes on.
            record.update(status="failed", error=f"{type(e).__name__}: {e}", metrics={})
        record["seconds"] = round(time.time() - start, 2)
        record["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds")
        with atomic_write(directory / "done.json") as f:  # last: it marks the cell finished
            json.dump(_plain(record), f, indent=2)

    # -- traces -------------------------------------------------------------------------------

    def _trace(self, cell: Cell, directory: Path) -> dict:
        p = cell.params
        ps, skipped = self.prompts(p["prompts"]), 0
        if p["corruption"] == "swap":
            ps, skipped = swappable(self.model, ps, p.get("swap_words"))
        result = tracing.trace(self.model, ps, kinds=p["kinds"], corruption=p["corruption"],
                               metric=p["metric"], window=p["window"], samples=p.get("samples"),
                               swap_words=p.get("swap_words"), seed=p["seed"],
                               method=p["method"], contrast=p.get("contrast"), progress=False)
        result.save(directory / "trace")
        return {**trace_metrics(result), "n_prompts": len(ps), "n_skipped": skipped}

    # -- edits --------------------------------------------------------------------------------

    def _edit(self, cell: Cell, directory: Path) -> dict:
        p = cell.params
        before = self.baseline()
        if "kl" in self.cfg.edit["suites"]:
            # Taken here, unedited: taken lazily under the edit below, the reference was the
            # first edited model, whose KL then read 0.
            self.reference()
        edit = fitting.lsdm(self.model, self.prompts(p["prompts"]), layers=p["layers"],
                            lam=p["lam"], seed=p["seed"], progress=False, **p["options"])
        edit.save(directory / "edit.safetensors")
        with edit.applied(self.model):
            report, caps, after = self.evaluate(with_kl=True)
        if report is not None:
            report.save(directory / "bias")
        caps.save(directory / "capability")
        targets = {f"target_{k}": v for k, v in edit.meta.get("targets", {}).items()
                   if is_kind(v, float)}
        return {**compare(before, after), **targets}

    def evaluate(self, *, with_kl: bool):
        """The bias report on the eval sets, the capability report, and their headline numbers."""

        e = self.cfg.edit
        contrast = e["options"].get("contrast")
        contrast = read_contrast(contrast) if contrast else None
        numbers, report = {}, None
        if contrast is None or is_gender(contrast):
            report = measure_bias(self.model, {n: self.prompts(n) for n in e["eval"]},
                                  progress=False)
            summary = report.summary(seed=self.cfg.seed)
            for name in e["eval"]:
                numbers[f"{name}_abs_gap"] = float(summary.loc[name, "abs_gap"])
                numbers[f"{name}_abs_logodds"] = float(summary.loc[name, "abs_logodds"])
        else:  # another bias: its lean on each evaluated set (`lean_measures`)
            for name in e["eval"]:
                ps = self.prompts(name)
                lean = lean_measures(contrast, contrast_logprobs(self.model, contrast, ps), ps)
                numbers.update({f"{name}_{k}": v for k, v in lean.items()})
        if "declared" in e["suites"]:  # declared pronouns kept, as `interp.evaluate` measures
            rows, _ = declared_rows(self.model, n_boot=200, seed=self.cfg.seed, progress=False)
            numbers.update({r["metric"]: r["value"] for r in rows})
        suites = [s for s in e["suites"] if s not in ("definitional", "declared", "kl")]
        results = list(C.capability(self.model, suites, text=self.heldout(),
                                    seed=self.cfg.seed).results.values())
        if "definitional" in e["suites"]:
            defs = self.prompts(e["definitional"]) if e["definitional"] else None
            results.append(C.definitional(self.model, defs, seed=self.cfg.seed))
        if with_kl and "kl" in e["suites"]:
            results.append(C.kl_divergence(self.model, self.reference(), seed=self.cfg.seed))
        caps = C.CapabilityReport(results, {"model": self.model.name,
                                            "fingerprint": self.model.fingerprint()})
        names = {"facts": "facts_acc", "perplexity": "perplexity",
                 "definitional": "definitional_acc", "kl": "kl"}
        numbers.update({names[r.name]: r.value for r in results})
        return report, caps, numbers

    def reference(self):
        """The unedited model's next-token distributions, for the KL suite (taken once)."""
        if self._reference is None:
            self._reference = C.next_token_logprobs(self.model, self.heldout())
        return self._reference

    def heldout(self) -> str | None:
        """The text perplexity and KL are measured on: the bundled held-out prose, or its first
        `heldout_tokens` tokens (a full pass over it is the slowest part of an evaluation)."""
        n = self.cfg.edit["heldout_tokens"]
        if n is None:
            return None

        tok = self.model.tokenizer
        return tok.decode(tok(C.heldout_text())["input_ids"][:n])

    def baseline(self) -> dict:
        """The numbers before any edit: read from out/baseline.json when it was measured on
        these weights with this evaluation, else measured now and saved there."""
        if self._baseline is not None:
            return self._baseline
        path = self.out / "baseline.json"
        key = _key({"model": self.model.name, "fingerprint": self.model.fingerprint(),
                    "seed": self.cfg.seed, **edit_evaluation(self.cfg)})
        try:
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                self._baseline = saved["metrics"]
                return self._baseline
        except (OSError, ValueError, KeyError):
            pass
        report, caps, numbers = self.evaluate(with_kl=False)
        if report is not None:
            report.save(self.out / "baseline" / "bias")
        caps.save(self.out / "baseline" / "capability")
        with atomic_write(path) as f:
            json.dump(_plain({"key": key, "model": self.model.name,
                              "fingerprint": self.model.fingerprint(), "metrics": numbers}),
                      f, indent=2)
        self._baseline = numbers
        return numbers


def _key(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _plain(value):
    """JSON-safe copy: numpy scalars to Python, NaN to null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def build_prompt_set(model, name: str, spec: dict, seed: int):
    """The prompt set a [prompts.NAME] spec describes, for this model (`P.named` resolves its
    source, as the command line resolves a set's name)."""

    if spec["source"] == "contrast":
        ps = read_contrast(spec["contrast"]).prompts(model, spec.get("split"))
    else:
        names = {"professions": spec.get("split"), "definitional": "definitional",
                 "jsonl": spec.get("path")}
        ps = P.named(model, names[spec["source"]], templates=spec.get("templates"))
    ps.name = name
    if "subjects" in spec:
        ps = _some_subjects(ps, spec["subjects"], seed)
    if "limit" in spec:
        ps = P.pick(ps, spec["limit"], seed)
    return ps.require_nonempty()


def _some_subjects(ps, n: int, seed: int):
    """A seeded sample of n subjects with all of their prompts: an edit balances a subject over
    every template it appears in, so subjects, not prompts, are the unit to sample."""
    subjects = ps.subjects()
    if n >= len(subjects):
        return ps
    chosen = {subjects[int(i)] for i in np.random.default_rng(seed).choice(len(subjects), n,
                                                                           replace=False)}
    return ps.filter(lambda p: p.subject in chosen)


def swappable(model, ps, words=None):
    """The prompts a swap corruption can counterfactualise (a swap word of the subject's token
    length exists), and how many were left out."""

    swap = Swap(words) if words else Swap()
    keep = []
    for p in ps:
        try:
            swap.corrupt_ids(model, p)
            keep.append(p)
        except TokenizationError:
            pass
    if not keep:
        raise InterpError(f"no prompt of {ps.name!r} can be swapped: no swap word "
                          f"({', '.join(swap.words)}) has the token length of any subject; "
                          "give trace.swap_words of matching lengths, or use noise")
    kept = {id(p) for p in keep}
    return ps.filter(lambda p: id(p) in kept), len(ps) - len(keep)


def trace_metrics(result) -> dict:
    """A trace's headline: its strongest site, the MLP peak at the subject's last token (where
    LSDM edits) and the attention peak at the last token (where the pronoun is read)."""
    top = result.top_sites(1).iloc[0]
    out = {"top_kind": top["kind"], "top_layer": int(top["layer"]),
           "top_token_group": top["token_group"], "top_effect": float(top["effect"]),
           "total_effect": float(result.prompts["total_effect"].abs().mean())}
    for kind, group in (("mlp", "last subject token"), ("attn", "last token")):
        try:
            profile = result.layer_profile(kind, group)
        except InterpError:  # this kind was not traced
            continue
        out[f"{kind}_peak_layer"] = int(profile.idxmax())
        out[f"{kind}_peak_effect"] = float(profile.max())
    if "mlp" in result.spec["kinds"]:
        out["mlp_suggested_layers"] = ",".join(map(str, result.suggest_layers("mlp")))
    return out


def compare(before: dict, after: dict) -> dict:
    """Before/after columns per measure, with the relative change of the bias measures."""
    out = {}
    for name, value in after.items():
        if name == "kl":  # zero before by definition
            out["kl_after"] = value
            continue
        b = before.get(name)
        out[f"{name}_before"], out[f"{name}_after"] = b, value
        if name.endswith(("_abs_gap", "_abs_logodds", "_abs_lean")) and b:
            out[f"{name}_change"] = (value - b) / b
    return out
