"""Causal mediation tracing (activation patching) over residual, MLP, attention and head outputs.

For each prompt, a clean run and a corrupted run (noise on the subject, or a counterfactual).
Each cell (kind, layer, position[, head]) restores the clean activation there (or over a window
of layers) into the corrupted run; its indirect effect is metric(patched) − metric(corrupted).

The exact engine batches many cells from many prompts into one forward, starts each batch at
the first layer it patches from the cached corrupted residual stream, reads logits only at each
prompt's last token, and skips cells before the first corrupted position (restoring them is a
no-op by causality: their effect is exactly 0).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from . import corruption as C
from .errors import InterpError
from .metrics import Candidates
from .prompts import PromptSet, from_jsonl
from .runner import Runner, capture, frozen, kv_prefix

KINDS = ("resid", "mlp", "attn", "head")
WINDOWED = ("mlp", "attn")
METHODS = ("exact", "attribution")


# ---------------------------------------------------------------------------------------------
# Metrics on last-token logits


@dataclass
class Metric:
    """fn maps next-token logits (rows, vocab), or only the logits of `tokens` when the metric
    needs no normalisation over the vocabulary, to one number per row."""

    fn: Callable
    tokens: list[int] | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.fn(logits)


def metric_fn(metric, candidates: Candidates) -> Metric:
    """The `Metric` for a metric name, or for a user callable on full logits (rows, vocab)."""
    he, she = candidates.ids["male"], candidates.ids["female"]
    if callable(metric):
        return Metric(metric)
    if metric == "logodds":  # log p(she) − log p(he): the normaliser cancels
        return Metric(lambda lg: lg[:, 1] - lg[:, 0], tokens=[he, she])

    def probs(logits):
        return logits.float().softmax(-1)

    table = {
        "gap": lambda lg: (lambda p: p[:, he] - p[:, she])(probs(lg)),
        "abs_gap": lambda lg: (lambda p: (p[:, he] - p[:, she]).abs())(probs(lg)),
        "p_male": lambda lg: probs(lg)[:, he],
        "p_female": lambda lg: probs(lg)[:, she],
    }
    if metric not in table:
        raise InterpError(f"unknown metric {metric!r}: use one of "
                          f"{sorted(table) + ['logodds']} or a callable")
    return Metric(table[metric])


# ---------------------------------------------------------------------------------------------
# The spec: everything that determines a trace, so it can be re-run on edited weights


@dataclass
class TraceSpec:
    kinds: tuple[str, ...] = ("resid", "mlp", "attn")
    corruption: dict = field(default_factory=lambda: {"type": "noise"})
    metric: str = "logodds"
    window: int = 1
    seed: int = 0
    method: str = "exact"
    model: str = ""
    fingerprint: str = ""

    def to_dict(self) -> dict:
        return {"kinds": list(self.kinds), "corruption": self.corruption, "metric": self.metric,
                "window": self.window, "seed": self.seed, "method": self.method,
                "model": self.model, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: dict) -> "TraceSpec":
        d = dict(d)
        d["kinds"] = tuple(d.get("kinds", ()))
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def make_corruption(self):
        c = dict(self.corruption)
        kind = c.pop("type")
        if kind == "noise":
            return C.Noise(scale=c.get("scale", 3.0), samples=c.get("samples", 3))
        if kind == "swap":
            return C.Swap(c.get("words", ("person", "man", "woman")))
        raise InterpError(f"a {kind!r} corruption cannot be rebuilt from a spec; pass it again")


def window_layers(layer: int, window: int, n_layers: int) -> tuple[int, int]:
    """Layers [a, b] restored for a cell centred on `layer` (ROME's convention)."""
    a = max(0, layer - window // 2)
    b = min(n_layers, layer - (-window // 2)) - 1
    return a, max(a, b)


# ---------------------------------------------------------------------------------------------
# Cells


@dataclass
class Cells:
    """Every cell of every prompt, as parallel arrays (one entry per prompt × cell)."""

    prompt: np.ndarray
    kind: np.ndarray  # index into KINDS
    layer: np.ndarray
    position: np.ndarray
    head: np.ndarray  # -1 when not a head cell

    def __len__(self):
        return len(self.prompt)


def enumerate_cells(kinds, n_layers: int, n_heads: int, lengths: Sequence[int]) -> Cells:
    cols = defaultdict(list)
    for i, T in enumerate(lengths):
        for kind in kinds:
            k = KINDS.index(kind)
            heads = range(n_heads) if kind == "head" else [-1]
            for layer in range(n_layers):
                for pos in range(T):
                    for h in heads:
                        cols["prompt"].append(i)
                        cols["kind"].append(k)
                        cols["layer"].append(layer)
                        cols["position"].append(pos)
                        cols["head"].append(h)
    return Cells(**{k: np.asarray(v, dtype=np.int64) for k, v in cols.items()})


# ---------------------------------------------------------------------------------------------
# The traced inputs of one call


@dataclass
class Inputs:
    prompts: list
    clean: list[torch.Tensor]  # per prompt (T, d): stream entering block 0
    corrupt: list[torch.Tensor]  # per prompt (samples, T, d)
    first_changed: list[int]
    corrupt_texts: list


def prepare_inputs(model, prompts, corr, seed: int) -> Inputs:
    runner = Runner(model)
    clean, corrupt, first, texts = [], [], [], []
    with torch.no_grad():
        for p in prompts:
            e = runner.embed(torch.tensor([p.input_ids], device=model.device))[0]
            c = corr(model, p, e, seed)
            clean.append(e)
            corrupt.append(c.embeds)
            first.append(c.first_changed)
            texts.append(c.text)
    return Inputs(list(prompts), clean, corrupt, first, texts)


def corrupted_rows(inputs: Inputs, chunk, width: int):
    """The corrupted runs of a chunk of prompts, one row per prompt and sample: the padded
    streams (rows, width, d), each row's local prompt index, and each prompt's row indices."""
    rows_of, streams, row_prompt = [], [], []
    for j, i in enumerate(chunk):
        s = inputs.corrupt[i].shape[0]
        rows_of.append(list(range(len(row_prompt), len(row_prompt) + s)))
        streams.extend(inputs.corrupt[i])
        row_prompt.extend([j] * s)
    device = inputs.corrupt[chunk[0]].device
    return _pad_stack(streams, width), torch.tensor(row_prompt, device=device), rows_of


def _pad_stack(tensors: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    out = tensors[0].new_zeros((len(tensors), width, *tensors[0].shape[1:]))
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out


# ---------------------------------------------------------------------------------------------
# The exact engine


class ExactEngine:
    def __init__(self, model, kinds, window: int, metric, batch_size: int = 128,
                 progress: bool | None = None):
        self.model, self.kinds, self.window = model, tuple(kinds), window
        self.metric, self.batch_size, self.progress = metric, batch_size, progress
        self.runner = Runner(model)
        self.arch = model.arch
        self.L = model.arch.n_layers

    def _hook(self, kind: str, layer: int) -> str:
        return self.arch.hook(kind, layer)

    def _run_cached(self, resid0: torch.Tensor, last: torch.Tensor, names):
        store, hooks = capture(names)
        with self.model.bridge.hooks(fwd_hooks=hooks):
            logits = self.runner.logits_at(resid0, 0, last, select=self.metric.tokens)
        return self.metric(logits), store

    @torch.no_grad()
    def run(self, inputs: Inputs, cells: Cells, chunk_prompts: int = 32):
        """Per cell: the patched metric averaged over samples. Also clean and corrupted metrics
        per prompt (corrupted averaged over samples)."""
        n = len(inputs.prompts)
        clean_m = np.zeros(n)
        corrupt_m = np.zeros(n)
        patched = np.zeros(len(cells))
        order = np.argsort([len(p.input_ids) for p in inputs.prompts], kind="stable")
        chunks = [order[i: i + chunk_prompts] for i in range(0, n, chunk_prompts)]
        total_rows = sum(inputs.corrupt[i].shape[0] for i in range(n)) * (len(cells) / max(n, 1))
        bar = tqdm(total=int(total_rows), desc="trace", unit="run",
                   disable=not (self.progress if self.progress is not None else total_rows > 5000))
        for chunk in chunks:
            self._run_chunk(inputs, cells, np.asarray(chunk), clean_m, corrupt_m, patched, bar)
        bar.close()
        return clean_m, corrupt_m, patched

    def _run_chunk(self, inputs, cells, chunk, clean_m, corrupt_m, patched, bar):
        device = self.model.device
        lengths = [len(inputs.prompts[i].input_ids) for i in chunk]
        width = max(lengths)
        local = {int(g): j for j, g in enumerate(chunk)}
        last = torch.tensor([t - 1 for t in lengths], device=device)

        # Clean run: the activations to restore.
        names = [self._hook(k, l) for k in self.kinds for l in range(self.L)]
        clean0 = _pad_stack([inputs.clean[i] for i in chunk], width)
        m, clean_cache = self._run_cached(clean0, last, names)
        clean_m[chunk] = m.double().cpu().numpy()

        # Corrupted runs, one row per prompt and sample: their residual streams are where the
        # patched runs start, their keys/values stand in for the positions a patch cannot reach.
        corrupt0, row_prompt, rows_of = corrupted_rows(inputs, chunk, width)
        store, hooks = capture([self.arch.hook("resid", l) for l in range(self.L)])
        with self.model.bridge.hooks(fwd_hooks=hooks):
            hidden, c_kv = self.runner.final_hidden(corrupt0, 0, keep_cache=True)
        c_metric = self.metric(self.runner.unembed_at(hidden, last[row_prompt],
                                                      select=self.metric.tokens)).double().cpu()
        for j, i in enumerate(chunk):
            corrupt_m[i] = float(c_metric[rows_of[j]].mean())

        # Cells of this chunk. Those before the first corrupted position restore a value equal
        # to the corrupted one: no effect. The rest run once per sample, grouped by the layer
        # they start at and the position they patch (which shares the keys/values before it).
        mine = np.nonzero(np.isin(cells.prompt, chunk))[0]
        first = np.array([inputs.first_changed[i] for i in cells.prompt[mine]])
        live = mine[cells.position[mine] >= first]
        dead = mine[cells.position[mine] < first]
        patched[dead] = corrupt_m[cells.prompt[dead]]
        bar.update(sum(len(rows_of[local[int(cells.prompt[c])]]) for c in dead))

        starts = cells.layer[live].copy()
        for idx in np.nonzero(np.isin(cells.kind[live], [KINDS.index(k) for k in WINDOWED]))[0]:
            starts[idx] = window_layers(int(cells.layer[live][idx]), self.window, self.L)[0]
        groups = defaultdict(list)
        for c, s in zip(live, starts):
            groups[(int(s), int(cells.position[c]))].append(c)
        sums = np.zeros(len(cells))
        for (s, p), group in sorted(groups.items()):
            runs = [(c, r) for c in group for r in rows_of[local[int(cells.prompt[c])]]]
            runs.sort(key=lambda cr: lengths[local[int(cells.prompt[cr[0]])]])
            for b in range(0, len(runs), self.batch_size):
                batch = runs[b: b + self.batch_size]
                values = self._run_batch(s, p, batch, cells, local, lengths, clean_cache,
                                         store, c_kv)
                for (c, _), v in zip(batch, values):
                    sums[c] += v
                bar.update(len(batch))
        for c in live:
            patched[c] = sums[c] / len(rows_of[local[int(cells.prompt[c])]])

    def _run_batch(self, start, pos, batch, cells, local, lengths, clean_cache, c_resid, c_kv):
        """Patched runs that all start at block `start` and patch position `pos`: only the
        positions from `pos` on are computed, over the corrupted keys/values before it."""
        device = self.model.device
        cell_ids = np.array([c for c, _ in batch])
        src_rows = torch.tensor([r for _, r in batch], device=device)
        prompt_local = torch.tensor([local[int(cells.prompt[c])] for c in cell_ids], device=device)
        width = max(lengths[int(j)] for j in prompt_local)
        x = c_resid[self.arch.hook("resid", start)][src_rows, pos:width].clone()
        kinds = cells.kind[cell_ids]
        layers = cells.layer[cell_ids]
        heads = torch.as_tensor(cells.head[cell_ids], device=device)

        resid = np.nonzero(kinds == KINDS.index("resid"))[0]
        if len(resid):
            r = torch.as_tensor(resid, device=device)
            x[r, 0] = clean_cache[self.arch.hook("resid", start)][prompt_local[r], pos]

        # Hooks writing clean values at (row, first position[, head]) for each patched layer.
        per_hook = defaultdict(list)
        for kind in ("mlp", "attn", "head"):
            for row in np.nonzero(kinds == KINDS.index(kind))[0]:
                a, b = ((window_layers(int(layers[row]), self.window, self.L))
                        if kind in WINDOWED else (int(layers[row]), int(layers[row])))
                for layer in range(a, b + 1):
                    per_hook[self._hook(kind, layer)].append(row)
        hooks = []
        for name, rows in per_hook.items():
            r = torch.as_tensor(rows, device=device)
            if name.endswith("hook_z"):
                vals = clean_cache[name][prompt_local[r], pos, heads[r]]
                hooks.append((name, _setter(r, vals, heads[r])))
            else:
                hooks.append((name, _setter(r, clean_cache[name][prompt_local[r], pos])))
        last = torch.tensor([lengths[int(j)] - 1 - pos for j in prompt_local], device=device)
        prefix = kv_prefix(c_kv, src_rows, pos) if pos > 0 else None
        with self.model.bridge.hooks(fwd_hooks=hooks):
            logits = self.runner.logits_at(x, start, last, prefix=prefix,
                                           select=self.metric.tokens)
        return self.metric(logits).double().cpu().tolist()


def _setter(rows, values, heads=None):
    """A hook that writes `values` at the first position of `rows` (and `heads`)."""
    def hook(act, hook):
        act = act.clone()
        if heads is None:
            act[rows, 0] = values
        else:
            act[rows, 0, heads] = values
        return act

    return hook


# ---------------------------------------------------------------------------------------------
# Attribution patching: (clean − corrupted activation) · gradient, one forward + backward


class AttributionEngine(ExactEngine):
    def run(self, inputs: Inputs, cells: Cells, chunk_prompts: int = 16):
        n = len(inputs.prompts)
        clean_m, corrupt_m = np.zeros(n), np.zeros(n)
        patched = np.zeros(len(cells))
        order = np.argsort([len(p.input_ids) for p in inputs.prompts], kind="stable")
        for b in range(0, n, chunk_prompts):
            self._chunk(inputs, cells, order[b: b + chunk_prompts], clean_m, corrupt_m, patched)
        return clean_m, corrupt_m, patched

    def _chunk(self, inputs, cells, chunk, clean_m, corrupt_m, patched):
        device = self.model.device
        lengths = [len(inputs.prompts[i].input_ids) for i in chunk]
        width = max(lengths)
        last = torch.tensor([t - 1 for t in lengths], device=device)
        names = sorted({self._hook(k, l) for k in self.kinds for l in range(self.L)})
        with torch.no_grad():
            clean0 = _pad_stack([inputs.clean[i] for i in chunk], width)
            m, clean_cache = self._run_cached(clean0, last, names)
        clean_m[chunk] = m.double().cpu().numpy()

        corrupt0, row_prompt_t, _ = corrupted_rows(inputs, chunk, width)
        row_prompt = row_prompt_t.cpu().numpy()
        acts = {}

        def keeper(name):
            def keep(act, hook):
                act.retain_grad()
                acts[name] = act
                return act
            return keep

        with torch.enable_grad(), frozen(self.model), \
                self.model.bridge.hooks(fwd_hooks=[(n, keeper(n)) for n in names]):
            corrupt0.requires_grad_(True)
            m = self.runner.logits_at(corrupt0, 0, last[row_prompt_t],
                                      select=self.metric.tokens)
            m = self.metric(m)
            m.sum().backward()
        m = m.detach().double().cpu().numpy()
        for j, i in enumerate(chunk):
            corrupt_m[i] = m[row_prompt == j].mean()

        # Per hook: (clean − corrupted) · grad, summed over features, averaged over samples.
        attr = {}
        for name in names:
            act, grad = acts[name].detach(), acts[name].grad
            diff = clean_cache[name][row_prompt_t] - act
            score = (diff * grad).sum(-1)  # (rows, T) or (rows, T, heads) for hook_z
            per_prompt = torch.zeros((len(chunk), *score.shape[1:]), dtype=torch.float64)
            per_prompt.index_add_(0, row_prompt_t.cpu(), score.double().cpu())
            counts = torch.bincount(row_prompt_t.cpu(), minlength=len(chunk)).double()
            attr[name] = per_prompt / counts.view(-1, *[1] * (score.dim() - 1))

        local = {int(g): j for j, g in enumerate(chunk)}
        for c in np.nonzero(np.isin(cells.prompt, chunk))[0]:
            j = local[int(cells.prompt[c])]
            kind = KINDS[cells.kind[c]]
            layer, pos, head = int(cells.layer[c]), int(cells.position[c]), int(cells.head[c])
            if pos < inputs.first_changed[int(cells.prompt[c])]:
                est = 0.0
            else:
                a, b = (window_layers(layer, self.window, self.L) if kind in WINDOWED
                        else (layer, layer))
                est = 0.0
                for l in range(a, b + 1):
                    v = attr[self._hook(kind, l)][j, pos]
                    est += float(v[head] if kind == "head" else v)
            patched[c] = corrupt_m[int(cells.prompt[c])] + est


# ---------------------------------------------------------------------------------------------
# The public entry point


def trace(model, prompts, *, kinds: Sequence[str] = ("resid", "mlp", "attn"),
          corruption="noise", metric="logodds", window: int = 1, samples: int | None = None,
          noise_scale: float = 3.0, swap_words: Sequence[str] | None = None, seed: int = 0,
          method: str = "exact", natural_effects: bool = False,
          spec: TraceSpec | dict | None = None, batch_size: int = 128,
          progress: bool | None = None):
    """Trace where the prompts' outcome is mediated: one restoration per (kind, layer, position
    [, head]) cell. Returns a `TraceResult`.

    prompts: a `PromptSet`, or a path to a JSONL file (`text`, `subject`, optional
    `corrupt_text`). spec: re-run a previous trace's settings (`trace_result.spec`).
    natural_effects: with a swap corruption, also Vig et al.'s natural indirect and direct
    effects per cell (columns `nie`, `nde`); costs a second pass over the grid.
    """
    from .result import TraceResult

    if spec is not None:
        spec = TraceSpec.from_dict(spec) if isinstance(spec, dict) else spec
        kinds, metric, window, seed, method = (spec.kinds, spec.metric, spec.window, spec.seed,
                                               spec.method)
        corr = spec.make_corruption()
    else:
        corr = C.resolve(corruption, samples=samples, noise_scale=noise_scale,
                         swap_words=swap_words)
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

    candidates = Candidates.resolve(model)
    fn = metric_fn(metric, candidates)
    metric_name = metric if isinstance(metric, str) else getattr(metric, "__name__", "custom")
    inputs = prepare_inputs(model, prompts, corr, seed)
    cells = enumerate_cells(kinds, L, model.arch.n_heads, [len(p.input_ids) for p in prompts])
    Engine = ExactEngine if method == "exact" else AttributionEngine
    engine = Engine(model, kinds, window, fn, batch_size=batch_size, progress=progress)
    clean_m, corrupt_m, patched = engine.run(inputs, cells)
    the_spec = TraceSpec(kinds=kinds, corruption=corr.spec(model), metric=metric_name,
                         window=window, seed=seed, method=method, model=model.name,
                         fingerprint=model.fingerprint())
    nie = None
    if natural_effects:
        # Vig et al.'s natural indirect effect: the clean input with one mediator set to its
        # counterfactual value. That is the same engine with the two inputs' roles exchanged.
        flipped = Inputs(inputs.prompts, [c[0] for c in inputs.corrupt],
                         [c.unsqueeze(0) for c in inputs.clean], inputs.first_changed,
                         inputs.corrupt_texts)
        _, _, reverse = engine.run(flipped, cells)
        nie = reverse - clean_m[cells.prompt]
    return TraceResult.build(prompts, inputs, cells, clean_m, corrupt_m, patched, the_spec,
                             nie=nie)
