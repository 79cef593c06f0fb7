"""Batched forward passes over right-padded token sequences: the next-token distribution at each
prompt's last position, or the logits at every position.

Right padding needs no attention mask: causal attention keeps every pad token after the real
ones, out of their view."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..common.errors import EmptyPromptSetError
from .runner import Runner, device_rows, kv_prefix, pad_ids


def batches(items: Sequence, batch_size: int, *, progress: bool | None, desc: str):
    """`items` in consecutive batches of `batch_size`, behind a progress bar (shown when
    `progress` is True, or when None and there are more than four batches)."""
    chunks = [items[i: i + batch_size] for i in range(0, len(items), batch_size)]
    show = progress if progress is not None else len(chunks) > 4
    return tqdm(chunks, desc=desc, unit="batch", disable=not show, leave=False)


@torch.no_grad()
def last_token_logprobs(
    model,
    token_ids: Sequence[Sequence[int]],
    *,
    select: Sequence[int] | None = None,
    batch_size: int = 64,
    progress: bool | None = None,
) -> torch.Tensor:
    """Log-probabilities of the next token after each sequence, shape (n, vocab) or (n, len(select)).

    Sequences are sorted by length and right-padded: causal attention keeps the padding out of
    every real position; the unembedding runs only at each sequence's last token.
    """
    if len(token_ids) == 0:
        raise EmptyPromptSetError("no prompts to run: the prompt set is empty")
    runner = Runner(model)
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    out: list[torch.Tensor | None] = [None] * len(token_ids)
    batch_size = device_rows(model, batch_size, len(token_ids[order[-1]]))
    for batch in batches(order, batch_size, progress=progress, desc="forward"):
        lengths = torch.tensor([len(token_ids[i]) for i in batch], device=model.device)
        ids = pad_ids(model, [token_ids[i] for i in batch])
        logits = runner.logits_at(runner.embed(ids), 0, lengths - 1)
        logprobs = logits.log_softmax(-1)
        if select is not None:
            logprobs = logprobs[:, list(select)]
        for row, i in enumerate(batch):
            out[i] = logprobs[row].cpu()
    return torch.stack(out)


@torch.no_grad()
def padded_logits(model, seqs: Sequence[Sequence[int]], *, batch_size: int,
                  progress: bool | None = None, desc: str = "forward"):
    """Next-token logits at every position of each sequence, batch by batch in the order of
    `seqs` (sort them by length to waste less on padding). Yields (indices into `seqs`, padded
    ids (rows, width), float32 logits (rows, width, vocab)); positions past a sequence's end
    are padding."""
    runner = Runner(model)
    for batch in batches(range(len(seqs)), batch_size, progress=progress, desc=desc):
        ids = pad_ids(model, [seqs[i] for i in batch])
        hidden = runner.final_hidden(runner.embed(ids), 0)
        yield list(batch), ids, runner.unembed(hidden).float()


@torch.no_grad()
def continuation_token_logprobs(model, contexts: Sequence[Sequence[int]],
                                continuations: Sequence[Sequence[int]], *, batch_size: int = 64,
                                progress: bool | None = None) -> list[np.ndarray]:
    """Per (context, continuation) pair of token-id lists, log p(token | context and the
    continuation before it) for each continuation token, as float64. Each distinct context runs
    once: its keys and values serve all of its continuations, which run from where it ends, and
    the vocabulary is read only where a continuation token is predicted. Contexts must not be
    empty."""
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    if any(len(c) == 0 for c in contexts):
        raise ValueError("a context is empty: the first continuation token needs one")
    runner = Runner(model)
    out: list[np.ndarray | None] = [None] * len(contexts)
    for users, n, hidden, cache in _run_distinct(model, runner, contexts, batch_size, progress):
        first = runner.unembed(hidden[:, -1]).float().log_softmax(-1)
        pairs = [(r, j) for r, js in enumerate(users) for j in js]
        _continue(model, runner, cache, n, first, pairs, continuations, out, batch_size)
    return out


def _run_distinct(model, runner, seqs, batch_size: int, progress):
    """Each distinct sequence of `seqs` run once, in batches of one length (no padding). Yields
    per batch (for each row, the indices into `seqs` of that sequence's copies; the length;
    the final hidden states; the keys and values)."""
    unique, users, groups = _distinct_by_length(seqs, batch_size)
    for (group,) in batches(groups, 1, progress=progress, desc="continuations"):
        ids = torch.tensor([unique[i] for i in group], device=model.device)
        hidden, cache = runner.final_hidden(runner.embed(ids), 0, keep_cache=True)
        yield [users[i] for i in group], ids.shape[1], hidden, cache


def _distinct_by_length(seqs, batch_size: int):
    """(distinct sequences, the indices into `seqs` of each one's copies, batches of distinct
    sequences' indices): a batch holds sequences of one length, so it needs no padding."""
    unique = list(dict.fromkeys(tuple(c) for c in seqs))
    owner = {c: i for i, c in enumerate(unique)}
    users: list[list[int]] = [[] for _ in unique]
    for j, c in enumerate(seqs):
        users[owner[tuple(c)]].append(j)
    by_length: dict[int, list[int]] = {}
    for i, c in enumerate(unique):
        by_length.setdefault(len(c), []).append(i)
    groups = [g[b: b + batch_size] for _, g in sorted(by_length.items())
              for b in range(0, len(g), batch_size)]
    return unique, users, groups


def _continue(model, runner, cache, n: int, first, pairs, continuations, out, batch_size: int):
    """Score each (row, j): continuation j after row `row` of `cache` (n positions long), whose
    next-token log-probabilities are `first[row]`; the result goes to out[j]."""
    dev = model.device
    pairs.sort(key=lambda rj: len(continuations[rj[1]]))
    for b in range(0, len(pairs), batch_size):
        part = pairs[b: b + batch_size]
        rows = torch.tensor([r for r, _ in part], device=dev)
        conts = [list(continuations[j]) for _, j in part]
        lp = [first[r, c[0]].item() if c else None for (r, _), c in zip(part, conts)]
        longest = max(map(len, conts))
        rest = np.zeros((len(part), max(longest - 1, 0)))
        if longest > 1:
            ids = pad_ids(model, [c[:-1] or [0] for c in conts])
            h = runner.final_hidden(runner.embed_at(ids, n), 0,
                                    prefix=kv_prefix(cache, rows, n))
            logits = runner.unembed(h).float()
            targets = pad_ids(model, [c[1:] or [0] for c in conts])
            rest = (logits.gather(-1, targets[..., None])[..., 0]
                    - logits.logsumexp(-1)).double().cpu().numpy()
        for k, ((_, j), c) in enumerate(zip(part, conts)):
            out[j] = np.array(([lp[k]] if c else []) + list(rest[k, : len(c) - 1]))


@torch.no_grad()
def staged_continuation_token_logprobs(model, heads: Sequence[Sequence[int]],
                                       tails: Sequence[Sequence[int]],
                                       continuations: Sequence[Sequence[int]], *,
                                       batch_size: int = 64,
                                       progress: bool | None = None) -> list[np.ndarray]:
    """`continuation_token_logprobs` for contexts head + tail that share heads (a passage
    asked several questions): each distinct head runs once, each of its distinct tails from
    the head's keys and values, and each continuation from the tail's. Heads and tails must not
    be empty."""
    if not len(heads) == len(tails) == len(continuations):
        raise ValueError(f"{len(heads)} heads, {len(tails)} tails and {len(continuations)} "
                         "continuations: pass one of each per query")
    if any(len(h) == 0 for h in heads) or any(len(t) == 0 for t in tails):
        raise ValueError("a head or a tail is empty: split each context into two non-empty parts")
    runner = Runner(model)
    dev = model.device
    out: list[np.ndarray | None] = [None] * len(heads)
    for queries, n, _, cache in _run_distinct(model, runner, heads, batch_size, progress):
        users: dict[tuple, list[int]] = {}
        for r, js in enumerate(queries):
            for j in js:
                users.setdefault((r, tuple(tails[j])), []).append(j)
        stems: dict[int, list[tuple]] = {}
        for stem in users:
            stems.setdefault(len(stem[1]), []).append(stem)
        for m, same in sorted(stems.items()):
            for b in range(0, len(same), batch_size):
                part = same[b: b + batch_size]
                rows = torch.tensor([r for r, _ in part], device=dev)
                h, grown = runner.final_hidden(
                    runner.embed_at(torch.tensor([t for _, t in part], device=dev), n), 0,
                    prefix=kv_prefix(cache, rows, n), keep_cache=True)
                first = runner.unembed(h[:, -1]).float().log_softmax(-1)
                pairs = [(k, j) for k, stem in enumerate(part) for j in users[stem]]
                _continue(model, runner, grown, n + m, first, pairs, continuations, out,
                          batch_size)
    return out
