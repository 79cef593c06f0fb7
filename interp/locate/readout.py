"""What a trace reads from the final hidden states of a run: one number per traced sequence.

A `Metric` (spec.py) reads the next-token logits at a prompt's last token. A contrast reads
more: each group's continuation, scored as the sum of its tokens' log-probabilities. A form of
several tokens is read from a sequence that continues the prompt with the form's leading
tokens, so a prompt is traced as one sequence per distinct continuation prefix (one sequence
when every form is one token). The metric is linear in the groups' log-probabilities,
Σ_g w_g log p(form_g) (`Contrast.trace_weights`), so a prompt's metric, and each cell's
effect, is the sum over its sequences. Cells restore positions of the prompt only: the
continuation tokens are the same in the clean and the corrupted runs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from ..measure.prompts import Prompt
from ..measure.suites.likelihood import encode_continuations
from .cells import Inputs


@dataclass
class LastToken:
    """A `Metric` read at each sequence's last position (the gender metrics)."""

    metric: object
    lengths: np.ndarray

    def read(self, runner, hidden: torch.Tensor, seqs, offset: int) -> torch.Tensor:
        last = torch.as_tensor(self.lengths[np.asarray(seqs)] - 1 - offset, device=hidden.device)
        return self.metric(runner.unembed_at(hidden, last, select=self.metric.tokens))


@dataclass
class ContrastReadout:
    """Per sequence: its prompt (`owner`), the reads (positions, token ids, weights, groups)
    whose weighted log-probabilities sum to its metric, and the positions whose log-normaliser
    the metric needs (those where the weights of the tokens read there do not sum to 0) with
    that sum. `group_logprobs` reads each group's log-probability instead."""

    owner: np.ndarray
    reads: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    norms: list[tuple[np.ndarray, np.ndarray]]
    n_groups: int

    def read(self, runner, hidden: torch.Tensor, seqs, offset: int) -> torch.Tensor:
        seqs = [int(s) for s in seqs]
        rows, at, tok, w, _ = _flat([self.reads[s] for s in seqs], offset, hidden.device)
        out = torch.zeros(len(seqs), device=hidden.device)
        out = out.index_add(0, rows, w * runner.logits_of(hidden[rows, at], tok))
        if any(len(self.norms[s][0]) for s in seqs):
            rows, at, total = _flat([self.norms[s] for s in seqs], offset, hidden.device)
            lse = runner.unembed(hidden[rows, at]).float().logsumexp(-1)
            out = out.index_add(0, rows, -total * lse)
        return out

    def group_logprobs(self, runner, hidden: torch.Tensor, seqs, offset: int) -> torch.Tensor:
        """(rows, groups): log p of each group's form read from each row (0 for a group the
        row's sequence does not read: its prompt's other sequences do)."""
        seqs = [int(s) for s in seqs]
        rows, at, tok, _, grp = _flat([self.reads[s] for s in seqs], offset, hidden.device)
        where = torch.stack([rows, at], 1)
        unique, back = where.unique(dim=0, return_inverse=True)
        lse = runner.unembed(hidden[unique[:, 0], unique[:, 1]]).float().logsumexp(-1)
        lp = runner.logits_of(hidden[rows, at], tok) - lse[back]
        out = torch.zeros((len(seqs), self.n_groups), device=hidden.device)
        return out.index_put((rows, grp), lp, accumulate=True)


def _flat(tables, offset: int, device):
    """Per-row tables (positions, ...columns) as flat tensors: row index, position − offset,
    then the other columns."""
    rows = np.concatenate([np.full(len(t[0]), i) for i, t in enumerate(tables)])
    cols = [np.concatenate([t[j] for t in tables]) for j in range(len(tables[0]))]
    cols[0] = cols[0] - offset
    return [torch.as_tensor(c, device=device) for c in (rows, *cols)]


def contrast_sequences(tokenizer, items, contrast) -> tuple[list[tuple], ContrastReadout]:
    """The token ids of the sequences that read `items` (prompts, or anything with
    `input_ids`, `slot`, `group` and `declared`) on `contrast`, and how to read each one.
    Forms are tokenized as the contrast's scorer does (apart from the context, after a space),
    so a clean sequence's metric equals Σ_g w_g `Contrast.logprobs`."""
    seqs, owner, reads, norms = [], [], [], []
    names = contrast.group_names
    for i, p in enumerate(items):
        weights = contrast.trace_weights(p.group, p.declared)
        forms = contrast.forms(p.slot)
        _, tokens = encode_continuations(tokenizer, [""] * len(forms), list(forms.values()))
        by_prefix = defaultdict(list)
        for g, ids in zip(forms, tokens):
            by_prefix[tuple(ids[:-1])].append((ids, g))
        P = len(p.input_ids)
        for prefix, members in by_prefix.items():
            got = [(P - 1 + t, tok, weights[g], names.index(g))
                   for ids, g in members for t, tok in enumerate(ids)]
            total = defaultdict(float)
            for at, _, w, _ in got:
                total[at] += w
            needed = [(at, w) for at, w in sorted(total.items()) if abs(w) > 1e-9]
            seqs.append(tuple(p.input_ids) + prefix)
            owner.append(i)
            reads.append(tuple(np.array([r[j] for r in got], dtype)
                               for j, dtype in enumerate((np.int64, np.int64, np.float32,
                                                          np.int64))))
            norms.append((np.array([n[0] for n in needed], np.int64),
                          np.array([n[1] for n in needed], np.float32)))
    return seqs, ContrastReadout(np.asarray(owner), reads, norms, len(names))


def extend_inputs(runner, inputs: Inputs, seqs: list[Prompt], owner: np.ndarray) -> Inputs:
    """The inputs of each sequence: its prompt's clean and corrupted streams, followed by the
    clean embedding of its continuation prefix in every sample."""
    clean, corrupt = [], []
    for s, i in zip(seqs, owner):
        P = len(inputs.prompts[i].input_ids)
        extra = runner.embed_at(torch.tensor([s.input_ids[P:]], device=inputs.clean[i].device),
                                P)[0] if len(s.input_ids) > P else inputs.clean[i][:0]
        clean.append(torch.cat([inputs.clean[i], extra]))
        c = inputs.corrupt[i]
        corrupt.append(torch.cat([c, extra.unsqueeze(0).expand(c.shape[0], -1, -1)], dim=1))
    return Inputs(list(seqs), clean, corrupt, [inputs.first_changed[i] for i in owner],
                  [inputs.corrupt_texts[i] for i in owner])


def fold(owner: np.ndarray, cells, seq_cells, n_prompts: int, clean, corrupt, patched, nie=None):
    """Sum the sequences' metrics and cell effects back onto their prompts (each sequence's
    cells are its prompt's cells, in the same order)."""
    def per_prompt(values):
        out = np.zeros(n_prompts)
        np.add.at(out, owner, values)
        return out

    start = np.searchsorted(cells.prompt, np.arange(n_prompts))
    seq_start = np.searchsorted(seq_cells.prompt, np.arange(len(owner)))
    s = seq_cells.prompt
    target = start[owner[s]] + np.arange(len(seq_cells)) - seq_start[s]

    def per_cell(values):
        out = np.zeros(len(cells))
        np.add.at(out, target, values)
        return out

    return (per_prompt(clean), per_prompt(corrupt), per_cell(patched),
            None if nie is None else per_cell(nie))
