"""Attribution patching: (clean − corrupted activation) · gradient, one forward and one backward
per chunk of prompts, a linear estimate of every cell's effect.
"""

from __future__ import annotations

import numpy as np
import torch

from ..model.runner import frozen
from .cells import Cells, Inputs, corrupted_rows, pad_stack
from .exact import ExactEngine
from .spec import KINDS, WINDOWED, window_layers


class AttributionEngine(ExactEngine):
    def run(self, inputs: Inputs, cells: Cells, chunk_prompts: int = 16):
        n = len(inputs.prompts)
        self.use_readout(inputs)
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
        names = sorted({self._hook(k, l) for k in self.kinds for l in range(self.L)})
        with torch.no_grad():
            clean0 = pad_stack([inputs.clean[i] for i in chunk], width)
            m, clean_cache = self._run_cached(clean0, chunk, names)
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
            m = self.read(self.runner.final_hidden(corrupt0, 0), chunk[row_prompt])
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
