"""Batched forward passes that read the next-token distribution at each prompt's last position."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from .errors import EmptyPromptSetError


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

    Sequences are sorted by length and right-padded, so padding never shifts a real token's
    position; the unembedding runs only at each sequence's last token, the one the metric reads.
    """
    if len(token_ids) == 0:
        raise EmptyPromptSetError("no prompts to run: the prompt set is empty")
    hf = model.hf
    body, unembed = hf.base_model, hf.get_output_embeddings()
    device = model.device
    pad = model.tokenizer.pad_token_id or 0
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    select_t = None if select is None else torch.as_tensor(list(select), device=device)
    out: list[torch.Tensor | None] = [None] * len(token_ids)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    show = progress if progress is not None else len(batches) > 4
    for batch in tqdm(batches, desc="forward", unit="batch", disable=not show, leave=False):
        lengths = torch.tensor([len(token_ids[i]) for i in batch], device=device)
        width = int(lengths.max())
        ids = torch.full((len(batch), width), pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(batch), width), dtype=torch.long, device=device)
        for row, i in enumerate(batch):
            ids[row, : lengths[row]] = torch.as_tensor(token_ids[i], device=device)
            mask[row, : lengths[row]] = 1
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
        last = hidden[torch.arange(len(batch), device=device), lengths - 1]
        logprobs = unembed(last).float().log_softmax(-1)
        if select_t is not None:
            logprobs = logprobs[:, select_t]
        for row, i in enumerate(batch):
            out[i] = logprobs[row].cpu()
    return torch.stack(out)
