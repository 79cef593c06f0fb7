"""The exact engine: every cell's restoration run, many cells per forward.

The runs that patch one position, from every prompt of a chunk, share forwards: a forward starts
at its lowest start layer from the cached corrupted residual stream, and each run joins it at
the block where its patch starts (the corrupted stream is put there), so no block runs twice
for a run and a small grid is a few passes. Only the positions from the patched one on are
computed (the corrupted keys/values stand in for the earlier ones), logits are read only at each
prompt's last token, and cells before the first corrupted position are skipped (restoring them
is a no-op by causality: their effect is exactly 0).
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm

from ..model.runner import Runner, capture, kv_prefix, token_budget
from .cells import Cells, Inputs, _pad_stack, corrupted_rows
from .spec import KINDS, WINDOWED, window_layers


class ExactEngine:
    def __init__(self, model, kinds, window: int, metric, batch_size: int | None = None,
                 progress: bool | None = None):
        self.model, self.kinds, self.window = model, tuple(kinds), window
        self.metric, self.batch_size, self.progress = metric, batch_size, progress
        self.runner = Runner(model)
        self.arch = model.arch
        self.L = model.arch.n_layers
        self.batch_tokens = token_budget(model)
        # A block's fixed cost per forward, in tokens' worth of its compute: on a CPU, reading
        # its weights and the hooks' Python (bundled model: 1.7 ms a block, 36 µs a token); on
        # a GPU, launching its kernels, where small forwards are launch-bound.
        self.call_cost = 2048 if model.device.type == "cuda" else 48
        # Block-tokens: what the grid needs at least (`floor`: each run from its start layer
        # and patched position on, plus the clean and corrupted runs) and what ran (`executed`).
        self.floor = self.executed = 0
        self.first_forward = None  # when the first forward began (time.perf_counter)

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
        if self.first_forward is None:
            self.first_forward = time.perf_counter()
        names = [self._hook(k, l) for k in self.kinds for l in range(self.L)]
        clean0 = _pad_stack([inputs.clean[i] for i in chunk], width)
        m, clean_cache = self._run_cached(clean0, last, names)
        clean_m[chunk] = m.double().cpu().numpy()

        # Corrupted runs, one row per prompt and sample: their residual streams are where the
        # patched runs start, their keys/values stand in for the positions a patch cannot reach.
        corrupt0, row_prompt, rows_of = corrupted_rows(inputs, chunk, width)
        self.floor += self.L * (sum(lengths) + sum(len(r) * t for r, t in zip(rows_of, lengths)))
        self.executed += self.L * width * (len(chunk) + len(row_prompt))
        store, hooks = capture([self.arch.hook("resid", l) for l in range(self.L)])
        with self.model.bridge.hooks(fwd_hooks=hooks):
            hidden, c_kv = self.runner.final_hidden(corrupt0, 0, keep_cache=True)
        c_metric = self.metric(self.runner.unembed_at(hidden, last[row_prompt],
                                                      select=self.metric.tokens)).double().cpu()
        for j, i in enumerate(chunk):
            corrupt_m[i] = float(c_metric[rows_of[j]].mean())

        # Cells of this chunk. Those before the first corrupted position restore a value equal
        # to the corrupted one: no effect. The rest run once per sample, grouped by the position
        # they patch (which shares the keys/values before it), in order of their start layer.
        mine = np.nonzero(np.isin(cells.prompt, chunk))[0]
        first = np.array([inputs.first_changed[i] for i in cells.prompt[mine]])
        live = mine[cells.position[mine] >= first]
        dead = mine[cells.position[mine] < first]
        patched[dead] = corrupt_m[cells.prompt[dead]]
        bar.update(sum(len(rows_of[local[int(cells.prompt[c])]]) for c in dead))

        starts = cells.layer[live].copy()
        for idx in np.nonzero(np.isin(cells.kind[live], [KINDS.index(k) for k in WINDOWED]))[0]:
            starts[idx] = window_layers(int(cells.layer[live][idx]), self.window, self.L)[0]
        by_pos = defaultdict(list)
        for c, s in zip(live, starts):
            for r in rows_of[local[int(cells.prompt[c])]]:
                by_pos[int(cells.position[c])].append((int(s), int(c), r))
        sums = np.zeros(len(cells))
        for p, runs in sorted(by_pos.items()):
            runs.sort()
            for batch in self._schedule(runs, p, lengths, local, cells):
                values = self._run_batch(p, batch, cells, local, lengths, clean_cache, store,
                                         c_kv)
                for (_, c, _), v in zip(batch, values):
                    sums[c] += v
                bar.update(len(batch))
        for c in live:
            patched[c] = sums[c] / len(rows_of[local[int(cells.prompt[c])]])
        self.floor += sum(len(rows_of[local[int(cells.prompt[c])]]) * (self.L - s)
                          * (lengths[local[int(cells.prompt[c])]] - int(cells.position[c]))
                          for c, s in zip(live, starts))

    def _schedule(self, runs, pos, lengths, local, cells):
        """Split one position's runs (start layer, cell, corrupted row), sorted by start, into
        forwards. A forward starts at its first run's start layer and the others join it at
        their own (`_run_batch`), computing the blocks in between for nothing; fewer, larger
        forwards cost less per token. Bands of start layers are chosen by dynamic programming
        to minimise wasted block-tokens plus `call_cost` block-token equivalents per block a
        forward runs, each band split into forwards within the token budget."""
        width = max(lengths[local[int(cells.prompt[c])]] for _, c, _ in runs) - pos
        most = max(1, self.batch_tokens // width)
        if self.batch_size:
            most = min(most, self.batch_size)
        keys = np.array([s for s, _, _ in runs])
        starts = np.unique(keys)
        # runs[count[k]:count[k + 1]] are the runs that start at starts[k]
        count = np.searchsorted(keys, np.append(starts, self.L))
        best, cut = [0.0] + [float("inf")] * len(starts), [0] * (len(starts) + 1)
        for j in range(1, len(starts) + 1):
            for i in range(j):
                rows = int(count[j] - count[i])
                cost = best[i] + (self.L - starts[i]) * (rows * width
                                                         + -(-rows // most) * self.call_cost)
                if cost < best[j]:
                    best[j], cut[j] = cost, i
        bands, j = [], len(starts)
        while j:
            bands.append((int(count[cut[j]]), int(count[j])))
            j = cut[j]
        for i, j in reversed(bands):
            for b in range(i, j, most):
                yield runs[b: min(b + most, j)]

    def _run_batch(self, pos, batch, cells, local, lengths, clean_cache, c_resid, c_kv):
        """Patched runs that patch position `pos`, in one forward from the first run's start
        layer: only the positions from `pos` on are computed, over the corrupted keys/values
        before it. A run that starts later joins at its start: the stream entering that block
        is overwritten with the corrupted one (its patch, for a residual cell), so the blocks
        it ran before do not count."""
        device = self.model.device
        start = batch[0][0]
        cell_ids = np.array([c for _, c, _ in batch])
        src_rows = torch.tensor([r for _, _, r in batch], device=device)
        prompt_local = torch.tensor([local[int(cells.prompt[c])] for c in cell_ids], device=device)
        width = max(lengths[int(j)] for j in prompt_local)
        self.executed += (self.L - start) * len(batch) * (width - pos)
        kinds = cells.kind[cell_ids]
        layers = cells.layer[cell_ids]
        heads = torch.as_tensor(cells.head[cell_ids], device=device)
        joins = np.array([s for s, _, _ in batch])
        is_resid = kinds == KINDS.index("resid")

        x = c_resid[self.arch.hook("resid", start)][src_rows, pos:width].clone()
        hooks = []
        for s in np.unique(joins):
            name = self.arch.hook("resid", int(s))
            patch = torch.as_tensor(np.nonzero((joins == s) & is_resid)[0], device=device)
            clean = clean_cache[name][prompt_local[patch], pos] if len(patch) else None
            if s > start:
                joining = torch.as_tensor(np.nonzero(joins == s)[0], device=device)
                hooks.append((name, _joiner(joining, c_resid[name][src_rows[joining], pos:width],
                                            patch, clean)))
            elif clean is not None:  # runs that start the forward: patch its input directly
                x[patch, 0] = clean

        # Hooks writing clean values at (row, first position[, head]) for each patched layer.
        per_hook = defaultdict(list)
        for kind in ("mlp", "attn", "head"):
            for row in np.nonzero(kinds == KINDS.index(kind))[0]:
                a, b = ((window_layers(int(layers[row]), self.window, self.L))
                        if kind in WINDOWED else (int(layers[row]), int(layers[row])))
                for layer in range(a, b + 1):
                    per_hook[self._hook(kind, layer)].append(row)
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


def _joiner(rows, streams, patch, clean):
    """A hook on the stream entering a block that puts `rows` at their corrupted `streams` (the
    runs that start there) and the clean value at the first position of `patch`."""
    def hook(act, hook):
        act = act.clone()
        act[rows] = streams
        if clean is not None:
            act[patch, 0] = clean
        return act

    return hook


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
