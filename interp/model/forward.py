"""Batched forward passes over right-padded token sequences: the next-token distribution at each
prompt's last position, or the logits at every position.

Right padding needs no attention mask: causal attention keeps every pad token after the real
ones, out of their view."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from ..common.errors import EmptyPromptSetError
from .runner import Runner, device_rows, pad_ids


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
