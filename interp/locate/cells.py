"""The grid of a trace (one cell per prompt, kind, layer, position[, head]) and its inputs: the
clean and corrupted residual streams entering block 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..model.runner import Runner
from .spec import KINDS


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
    return pad_stack(streams, width), torch.tensor(row_prompt, device=device), rows_of


def pad_stack(tensors: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    out = tensors[0].new_zeros((len(tensors), width, *tensors[0].shape[1:]))
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out
