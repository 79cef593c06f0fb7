"""Causal mediation tracing (activation patching) over residual, MLP, attention and head outputs.

For each prompt, a clean run and a corrupted run (noise on the subject, or a counterfactual).
Each cell (kind, layer, position[, head]) restores the clean activation there (or over a window
of layers) into the corrupted run; its indirect effect is metric(patched) − metric(corrupted).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from ..common.errors import InterpError
from ..measure.contrast import Contrast
from ..measure.contrast import contrast as contrast_of
from ..measure.metrics import Candidates
from ..measure.prompts import PromptSet, from_jsonl
from ..model.runner import Runner
from . import corruption as C
from .attribution import AttributionEngine
from .cells import Inputs, enumerate_cells, prepare_inputs
from .exact import ExactEngine
from .readout import contrast_sequences, extend_inputs, fold
from .result import TraceResult
from .spec import KINDS, METHODS, TraceSpec, metric_fn


def trace(model, prompts=None, *, contrast=None, kinds: Sequence[str] = ("resid", "mlp", "attn"),
          corruption="noise", metric="logodds", window: int = 1, samples: int | None = None,
          noise_scale: float = 3.0, swap_words: Sequence[str] | None = None, seed: int = 0,
          method: str = "exact", natural_effects: bool = False,
          spec: TraceSpec | dict | None = None, batch_size: int | None = None,
          progress: bool | None = None):
    """Trace where the prompts' outcome is mediated: one restoration per (kind, layer, position
    [, head]) cell. Returns a `TraceResult`.

    prompts: a `PromptSet`, or a path to a JSONL file (`text`, `subject`, optional
    `corrupt_text`); with a contrast, by default its train prompts (`Contrast.prompts`).
    contrast: a `Contrast`, a built-in's name or a file; the metric is then the contrast's
    linear lean, Σ_g w_g log p(group g's continuation), multi-token forms summed
    (`Contrast.trace_weights`, interp/locate/readout.py).
    spec: re-run a previous trace's settings (`trace_result.spec`).
    natural_effects: with a swap corruption, also Vig et al.'s natural indirect and direct
    effects per cell (columns `nie`, `nde`); costs a second pass over the grid.
    batch_size: patched runs per forward at most; None: as many as fit the token budget of
    the model's device (`interp.model.runner.token_budget`).
    """

    started = time.perf_counter()
    if spec is not None:
        spec = TraceSpec.from_dict(spec) if isinstance(spec, dict) else spec
        kinds, metric, window, seed, method = (spec.kinds, spec.metric, spec.window, spec.seed,
                                               spec.method)
        corr = spec.make_corruption()
        if spec.contrast is not None and contrast is None:
            contrast = Contrast.from_dict(spec.contrast, "the trace spec's contrast")
            metric = "logodds"
    else:
        corr = C.resolve(corruption, samples=samples, noise_scale=noise_scale,
                         swap_words=swap_words)
    if contrast is not None:
        contrast = contrast_of(contrast)
        if metric != "logodds":
            raise InterpError(f"a contrast sets the metric (its lean); pass metric={metric!r} "
                              "or contrast=, not both")
        contrast.check_vocabulary(model.tokenizer)
        if prompts is None:
            prompts = contrast.prompts(model, "train")
    elif prompts is None:
        raise InterpError("nothing to trace: pass prompts, or contrast= (a built-in's name, "
                          "a file or a Contrast) to trace its train prompts")
    if isinstance(prompts, (str, bytes)) or hasattr(prompts, "__fspath__"):
        prompts = from_jsonl(model, prompts)
    if not isinstance(prompts, PromptSet):
        prompts = PromptSet(list(prompts))
    prompts.require_nonempty()
    kinds = tuple(kinds)
    for k in kinds:
        if k not in KINDS:
            raise InterpError(f"unknown kind {k!r}: choose from {', '.join(KINDS)}")
    if not kinds:
        raise InterpError("no kinds to trace: pass e.g. kinds=('resid', 'mlp', 'attn')")
    L = model.arch.n_layers
    if not 1 <= window <= L:
        raise InterpError(f"window {window} does not fit the model: it must be 1..{L} layers")
    if method not in METHODS:
        raise InterpError(f"unknown method {method!r}: use 'exact' or 'attribution'")
    for p in prompts:
        a, b = p.subject_span
        if not (0 <= a < b <= len(p.input_ids)) or p.subject not in p.text:
            raise InterpError(f"the subject {p.subject!r} is not in the prompt {p.text!r}")

    if natural_effects and not (isinstance(corr, C.Swap) and method == "exact"):
        raise InterpError("natural_effects needs corruption='swap' and method='exact'")

    inputs = prepare_inputs(model, prompts, corr, seed)
    cells = enumerate_cells(kinds, L, model.arch.n_heads, [len(p.input_ids) for p in prompts])
    if contrast is None:
        fn = metric_fn(metric, Candidates.resolve(model))
        metric_name = metric if isinstance(metric, str) else getattr(metric, "__name__", "custom")
        run_inputs, run_cells = inputs, cells
    else:
        # One traced sequence per prompt and continuation prefix; effects are summed back.
        ids, fn = contrast_sequences(model.tokenizer, prompts, contrast)
        seqs = [replace(prompts[int(i)], input_ids=s) for s, i in zip(ids, fn.owner)]
        metric_name = f"contrast:{contrast.name}"
        run_inputs = extend_inputs(Runner(model), inputs, seqs, fn.owner)
        run_cells = enumerate_cells(kinds, L, model.arch.n_heads,
                                    [len(prompts[int(i)].input_ids) for i in fn.owner])
    Engine = ExactEngine if method == "exact" else AttributionEngine
    engine = Engine(model, kinds, window, fn, batch_size=batch_size, progress=progress)
    clean_m, corrupt_m, patched = engine.run(run_inputs, run_cells)
    the_spec = TraceSpec(kinds=kinds, corruption=corr.spec(model), metric=metric_name,
                         window=window, seed=seed, method=method, model=model.name,
                         fingerprint=model.fingerprint(),
                         contrast=None if contrast is None else contrast.to_dict())
    nie = None
    if natural_effects:
        # Vig et al.'s natural indirect effect: the clean input with one mediator set to its
        # counterfactual value. That is the same engine with the two inputs' roles exchanged.
        flipped = Inputs(run_inputs.prompts, [c[0] for c in run_inputs.corrupt],
                         [c.unsqueeze(0) for c in run_inputs.clean], run_inputs.first_changed,
                         run_inputs.corrupt_texts)
        _, _, reverse = engine.run(flipped, run_cells)
        nie = reverse - clean_m[run_cells.prompt]
    if contrast is not None:
        clean_m, corrupt_m, patched, nie = fold(fn.owner, cells, run_cells, len(prompts),
                                                clean_m, corrupt_m, patched, nie)
    result = TraceResult.build(prompts, inputs, cells, clean_m, corrupt_m, patched, the_spec,
                               nie=nie)
    if method == "exact":
        result.cost = {"floor_block_tokens": engine.floor,
                       "executed_block_tokens": engine.executed,
                       "setup_s": engine.first_forward - started,
                       "total_s": time.perf_counter() - started}
    return result
