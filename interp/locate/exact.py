"""The exact engine: every cell's restoration run, many cells per forward.

The runs that patch one position, from every prompt of a chunk, share forwards: a forward starts
at its lowest start layer from the cached corrupted residual stream, and each run joins it at
the block where its patch starts (its corrupted stream is appended to the batch there), so a
block runs for a run only from its start on, and a small grid is a few passes. Only the
positions from the patched one on are computed (the corrupted keys/values stand in for the
earlier ones), logits are read only where the metric reads (`readout`), and cells before the
first corrupted position are skipped (restoring them is a no-op by causality: their effect is
exactly 0).
"""

from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import torch
from tqdm.auto import tqdm

from ..model.runner import Runner, capture, kv_prefix, token_budget
from .cells import Cells, Inputs, corrupted_rows, pad_stack
from .readout import LastToken
from .spec import KINDS, WINDOWED, Metric, window_layers


class ExactEngine:
    def __init__(self, model, kinds, window: int, metric, batch_size: int | None = None,
                 progress: bool | None = None):
        self.model, self.kinds, self.window = model, tuple(kinds), window
        self.metric, self.batch_size, self.progress = metric, batch_size, progress
        self.runner = Runner(model)
        self.readout = None  # how the metric is read from a run: set by `run`
        self.arch = model.arch
        self.L = model.arch.n_layers
        self.batch_tokens = token_budget(model)
        # Block-tokens: what the grid needs at least (`floor`: each run from its start layer
        # and patched position on, plus the clean and corrupted runs) and what ran (`executed`).
        self.floor = self.executed = 0
        self.first_forward = None  # when the first forward began (time.perf_counter)

    def _hook(self, kind: str, layer: int) -> str:
        return self.arch.hook(kind, layer)

    def read(self, hidden: torch.Tensor, seqs, offset: int = 0) -> torch.Tensor:
        """The metric of each row of `hidden` (final hidden states of positions `offset` on),
        row i being a run of traced sequence seqs[i]."""
        return self.readout.read(self.runner, hidden, seqs, offset)

    def _run_cached(self, resid0: torch.Tensor, seqs, names):
        store, hooks = capture(names)
        with self.model.bridge.hooks(fwd_hooks=hooks):
            hidden = self.runner.final_hidden(resid0, 0)
        return self.read(hidden, seqs), store

    @torch.no_grad()
    def run(self, inputs: Inputs, cells: Cells, chunk_prompts: int = 32):
        """Per cell: the patched metric averaged over samples. Also clean and corrupted metrics
        per prompt (corrupted averaged over samples)."""
        n = len(inputs.prompts)
        self.use_readout(inputs)
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

    def use_readout(self, inputs: Inputs) -> None:
        """Read a `Metric` at each sequence's last token, unless given a readout."""
        if isinstance(self.metric, Metric):
            self.readout = LastToken(self.metric, np.array([len(p.input_ids)
                                                            for p in inputs.prompts]))
        else:
            self.readout = self.metric

    def _run_chunk(self, inputs, cells, chunk, clean_m, corrupt_m, patched, bar):
        device = self.model.device
        lengths = [len(inputs.prompts[i].input_ids) for i in chunk]
        width = max(lengths)
        local = {int(g): j for j, g in enumerate(chunk)}

        # Clean and corrupted runs, in one forward: the clean activations to restore; per
        # prompt and sample, the corrupted residual streams (where the patched runs start) and
        # keys/values (standing in for the positions a patch cannot reach).
        if self.first_forward is None:
            self.first_forward = time.perf_counter()
        names = [self._hook(k, l) for k in self.kinds for l in range(self.L)]
        resid = [self.arch.hook("resid", l) for l in range(self.L)]
        clean0 = pad_stack([inputs.clean[i] for i in chunk], width)
        corrupt0, row_prompt, rows_of = corrupted_rows(inputs, chunk, width)
        self.floor += self.L * (sum(lengths) + sum(len(r) * t for r, t in zip(rows_of, lengths)))
        self.executed += self.L * width * (len(chunk) + len(row_prompt))
        nc = len(chunk)
        store, hooks = capture(dict.fromkeys(names + resid))
        with self.model.bridge.hooks(fwd_hooks=hooks):
            hidden, kv = self.runner.final_hidden(torch.cat([clean0, corrupt0]), 0,
                                                  keep_cache=True)
        m = self.read(hidden, np.concatenate([chunk, chunk[row_prompt.cpu().numpy()]])
                      ).double().cpu()
        clean_m[chunk] = m[:nc].numpy()
        c_metric = m[nc:]
        clean_cache = {n: store[n][:nc] for n in names}
        c_resid = {n: store[n][nc:] for n in resid}
        c_kv = kv_prefix(kv, torch.arange(nc, nc + len(row_prompt), device=device), width)
        del store, kv
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
                values = self._run_batch(p, batch, cells, local, lengths, clean_cache, c_resid,
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
        forwards within the token budget. A forward starts at its first run's start layer and
        the others join it at their own (`_run_batch`), so each block runs once per forward
        for just the runs that have joined: cutting the sorted runs into consecutive forwards
        adds only the blocks those forwards share."""
        width = max(lengths[local[int(cells.prompt[c])]] for _, c, _ in runs) - pos
        most = max(1, self.batch_tokens // width)
        if self.batch_size:
            most = min(most, self.batch_size)
        for b in range(0, len(runs), most):
            yield runs[b: b + most]

    def _run_batch(self, pos, batch, cells, local, lengths, clean_cache, c_resid, c_kv):
        """Patched runs that patch position `pos`, sorted by start layer, in one forward from
        the first run's start: only the positions from `pos` on are computed, over the
        corrupted keys/values before it. The batch grows as it goes: the runs that start at a
        later block join there, as rows appended to the stream entering it (their corrupted
        stream, with the clean value at `pos` for a residual cell), so no block runs for a
        run before its start."""
        device = self.model.device
        joins = np.array([s for s, _, _ in batch])
        start = int(joins[0])
        cell_ids = np.array([c for _, c, _ in batch])
        src_rows = torch.tensor([r for _, _, r in batch], device=device)
        prompt_local = torch.tensor([local[int(cells.prompt[c])] for c in cell_ids], device=device)
        width = max(lengths[int(j)] for j in prompt_local)
        self.executed += int((self.L - joins).sum()) * (width - pos)
        kinds = cells.kind[cell_ids]
        layers = cells.layer[cell_ids]
        heads = torch.as_tensor(cells.head[cell_ids], device=device)
        is_resid = kinds == KINDS.index("resid")
        # alive[l]: how many runs have joined by block l (the first alive[l] rows of the batch)
        alive = np.searchsorted(joins, np.arange(self.L), side="right")

        x, hooks = None, []
        for s in np.unique(joins):
            name = self.arch.hook("resid", int(s))
            a, b = (0 if s == start else int(alive[s - 1])), int(alive[s])
            rows = torch.arange(a, b, device=device)
            stream = c_resid[name][src_rows[rows], pos:width].clone()
            patch = rows[torch.as_tensor(is_resid[a:b], device=device)]
            if len(patch):
                stream[patch - a, 0] = clean_cache[name][prompt_local[patch], pos]
            if s == start:
                x = stream
            else:
                hooks.append((name, _joiner(stream)))

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
        prefix = kv_prefix(c_kv, src_rows, pos, alive=alive) if pos > 0 else None
        with self.model.bridge.hooks(fwd_hooks=hooks):
            hidden = self.runner.final_hidden(x, start, prefix=prefix, grows=True)
        return self.read(hidden, cells.prompt[cell_ids], pos).double().cpu().tolist()


def _joiner(streams):
    """A hook on the stream entering a block that appends the rows of the runs joining there."""
    def hook(act, hook):
        return torch.cat([act, streams])

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
