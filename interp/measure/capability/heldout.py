"""Held-out prose: perplexity, and KL(reference ‖ model) of the next-token distributions at every
position, against a compact stored reference or another model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ...common.errors import EmptyPromptSetError, InterpError
from ...common.io import atomic_path
from ...model.forward import padded_logits
from ...model.tokens import start_ids, windows
from .. import metrics
from .result import CapabilityResult, model_meta

DEFAULT_TOP_K = 1024  # ~25 MB per reference on heldout.txt; see NextTokenLogprobs


def heldout_text() -> str:
    return resources.files("interp.data").joinpath("heldout.txt").read_text()


def text_chunks(model, text: str | None = None, *, seq_len: int = 128) -> list[list[int]]:
    """The text's tokens in consecutive, non-overlapping windows of `seq_len` (the last may be
    shorter; a window that predicts nothing is dropped). Each window starts with what the
    tokenizer puts in front of a text (Gemma's <bos>; nothing for SmolLM2), as context."""
    if seq_len < 2 + len(start_ids(model.tokenizer)):
        raise InterpError(f"seq_len must be at least 2 (a window predicts its later tokens), "
                          f"not {seq_len}")
    chunks = windows(model.tokenizer, heldout_text() if text is None else text, seq_len)
    chunks = [c for c in chunks if len(c) >= 2 + len(start_ids(model.tokenizer))]
    if not chunks:
        raise EmptyPromptSetError("the text is too short: it needs at least two tokens")
    return chunks


def chunk_logprobs(model, chunks: list[list[int]], *, batch_size: int = 8):
    """Yield (chunk indices, (rows, width, vocab) float32 log-probs, lengths) batch by batch."""
    for batch, _, logits in padded_logits(model, chunks, batch_size=batch_size, progress=False):
        yield batch, logits.log_softmax(-1), [len(chunks[i]) for i in batch]


def perplexity(model, text: str | None = None, *, seq_len: int = 128, batch_size: int = 8,
               n_boot: int = 1000, seed: int = 0) -> CapabilityResult:
    """exp(mean next-token NLL over every predicted token) of the held-out text (or `text`), cut
    into windows of `seq_len`; each window's first token is context only (the start token where
    the tokenizer adds one, else the window's first word piece). The CI is the bootstrap CI over windows of the per-token mean NLL,
    exponentiated."""
    chunks = text_chunks(model, text, seq_len=seq_len)
    nll = np.zeros(len(chunks))
    for batch, logprobs, lengths in chunk_logprobs(model, chunks, batch_size=batch_size):
        for row, (i, n) in enumerate(zip(batch, lengths)):
            target = torch.as_tensor(chunks[i][1:], device=logprobs.device)
            nll[i] = -logprobs[row, : n - 1].gather(1, target[:, None]).double().sum().item()
    counts = np.array([len(c) - 1 for c in chunks], dtype=float)
    items = pd.DataFrame({"chunk": range(len(chunks)), "n_tokens": counts.astype(int),
                          "nll_sum": nll, "mean_nll": nll / counts,
                          "text": [model.tokenizer.decode(c) for c in chunks]})
    lo, hi = _ratio_ci(nll, counts, n_boot=n_boot, seed=seed)
    mean_nll = nll.sum() / counts.sum()
    extra = {"mean_nll": float(mean_nll), "tokens": int(counts.sum()), "seq_len": seq_len}
    return CapabilityResult("perplexity", "perplexity", float(np.exp(mean_nll)), float(np.exp(lo)),
                            float(np.exp(hi)), len(chunks), items, extra, model_meta(model))


def _ratio_ci(num, den, *, n_boot: int, seed: int) -> tuple[float, float]:
    """Bootstrap interval of sum(num)/sum(den) resampling units (chunks): a per-token mean over
    chunks of unequal length. `metrics.bootstrap_ci` resamples unit indices."""
    num, den = np.asarray(num, float), np.asarray(den, float)

    def ratio(idx, axis):
        idx = idx.astype(int)
        return num[idx].sum(axis) / den[idx].sum(axis)

    return metrics.bootstrap_ci(np.arange(len(num)), statistic=ratio, n_boot=n_boot, seed=seed)


@dataclass
class NextTokenLogprobs:
    """A model's next-token distributions at every position of a text, stored compactly: the
    `top_k` most likely tokens' log-probs and the log of the remaining mass ("tail").

    Full float32 distributions over the 49,152-token vocabulary at ~3,000 positions would take
    ~590 MB; top-1024 takes ~25 MB. KL against it treats the tail as one outcome, which by the
    data-processing inequality is a lower bound on the exact KL, short only by the reference's
    tail mass times the KL within the tail (how the model reshuffles tokens the reference found
    very unlikely). With top_k >= vocab size it is exact; how close the bound is on the bundled
    model is in docs/evaluation.md. Pass the unedited model itself for the exact value."""

    text: str
    chunks: list[list[int]]
    top_ids: torch.Tensor  # (positions, k) int32
    top_logprobs: torch.Tensor  # (positions, k) float32
    tail_logprob: torch.Tensor  # (positions,) float32; -inf where the top k hold all the mass
    seq_len: int
    meta: dict = field(default_factory=dict)

    @property
    def top_k(self) -> int:
        return self.top_ids.shape[1]

    def save(self, path: str | Path) -> Path:
        with atomic_path(path) as tmp:
            torch.save({k: getattr(self, k) for k in ("text", "chunks", "top_ids", "top_logprobs",
                                                     "tail_logprob", "seq_len", "meta")}, tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "NextTokenLogprobs":
        return cls(**torch.load(path))


def next_token_logprobs(model, text: str | None = None, *, seq_len: int = 128,
                        batch_size: int = 8, top_k: int = DEFAULT_TOP_K) -> NextTokenLogprobs:
    """The reference for `kl_divergence`: take it before editing a model in place."""
    text = heldout_text() if text is None else text
    chunks = text_chunks(model, text, seq_len=seq_len)
    k = min(top_k, model.hf.get_output_embeddings().weight.shape[0])
    ids, lps, tails = [], [], []
    for _, logprobs, lengths in chunk_logprobs(model, chunks, batch_size=batch_size):
        flat = _real_positions(logprobs, lengths)
        top = flat.topk(k, dim=-1)
        ids.append(top.indices.to(torch.int32).cpu())
        lps.append(top.values.cpu())
        tails.append(_tail(flat, top.indices).cpu())
    return NextTokenLogprobs(text, chunks, torch.cat(ids), torch.cat(lps), torch.cat(tails),
                             seq_len, model_meta(model))


def kl_divergence(model, reference, text: str | None = None, *, seq_len: int = 128,
                  batch_size: int = 8, n_boot: int = 1000, seed: int = 0) -> CapabilityResult:
    """Mean over every position of the held-out text of KL(reference ‖ model), in nats, with a
    bootstrap CI over windows.

    reference: a `NextTokenLogprobs` (from `next_token_logprobs` before an in-place edit; its
    text and windows are used; `text`, if given, must be that text) or another loaded model with
    the same tokenizer (exact KL over the full vocabulary)."""
    if isinstance(reference, NextTokenLogprobs):
        chunks, seq_len = reference.chunks, reference.seq_len
        _check_reference(model, reference, text)
        per_pos = _kl_to_stored(model, reference, batch_size=batch_size)
        how = f"top-{reference.top_k} + tail"
    else:
        chunks = text_chunks(model, text, seq_len=seq_len)
        if text_chunks(reference, text, seq_len=seq_len) != chunks:
            raise InterpError("the reference model tokenizes the text differently: KL needs the "
                              "same tokenizer")
        per_pos = _kl_to_model(model, reference, chunks, batch_size=batch_size)
        how = "exact"
    return _kl_result(model, chunks, per_pos, seq_len, how, n_boot=n_boot, seed=seed)


def _kl_result(model, chunks, per_pos: np.ndarray, seq_len: int, how: str, *, n_boot: int,
               seed: int) -> CapabilityResult:
    counts = np.array([len(c) for c in chunks], dtype=float)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int)
    sums = np.add.reduceat(per_pos, starts)
    items = pd.DataFrame({"chunk": range(len(chunks)), "n_positions": counts.astype(int),
                          "kl_sum": sums, "mean_kl": sums / counts,
                          "max_kl": np.maximum.reduceat(per_pos, starts)})
    lo, hi = _ratio_ci(sums, counts, n_boot=n_boot, seed=seed)
    extra = {"positions": int(counts.sum()), "max_kl": float(per_pos.max()), "kl_method": how,
             "seq_len": seq_len}
    return CapabilityResult("kl", "kl", float(per_pos.mean()),
                            lo, hi, len(chunks), items, extra, model_meta(model))


def _kl_to_stored(model, ref: NextTokenLogprobs, *, batch_size: int) -> np.ndarray:
    out, at = [], 0
    for _, logprobs, lengths in chunk_logprobs(model, ref.chunks, batch_size=batch_size):
        q = _real_positions(logprobs, lengths)
        sl = slice(at, at + q.shape[0])
        at += q.shape[0]
        ids = ref.top_ids[sl].to(q.device, torch.long)
        p_top, p_tail = ref.top_logprobs[sl].to(q.device), ref.tail_logprob[sl].to(q.device)
        q_top, q_tail = q.gather(1, ids), _tail(q, ids)
        kl = (p_top.exp() * (p_top - q_top)).sum(-1) + _xlogx_ratio(p_tail, q_tail)
        out.append(kl.double().cpu())
    return torch.cat(out).numpy()


def _kl_to_model(model, reference, chunks, *, batch_size: int) -> np.ndarray:
    out = []
    ref_batches = chunk_logprobs(reference, chunks, batch_size=batch_size)
    for (_, q, lengths), (_, p, _) in zip(chunk_logprobs(model, chunks, batch_size=batch_size),
                                          ref_batches):
        p, q = _real_positions(p, lengths), _real_positions(q, lengths).to(p.device)
        out.append(F.kl_div(q, p, log_target=True, reduction="none").sum(-1).double().cpu())
    return torch.cat(out).numpy()


def _xlogx_ratio(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """p·(log p − log q), with 0 where p = 0 (the reference put all its mass in the top k)."""
    return torch.where(torch.isneginf(log_p), torch.zeros_like(log_p),
                       log_p.exp() * (log_p - log_q))


def _real_positions(logprobs: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
    """(positions, vocab): every real position of each row, padding dropped, rows in order."""
    return torch.cat([logprobs[r, :n] for r, n in enumerate(lengths)])


def _tail(logprobs: torch.Tensor, top_ids: torch.Tensor) -> torch.Tensor:
    """log of the mass outside `top_ids`, summed directly (1 − Σ top loses it to rounding)."""
    rest = logprobs.scatter(1, top_ids.long(), float("-inf"))
    return rest.logsumexp(-1)


def _check_reference(model, ref: NextTokenLogprobs, text: str | None) -> None:
    if text is not None and text != ref.text:
        raise InterpError("kl_divergence got a text other than the one the reference was taken "
                          "on; omit `text`, or take a new reference on this text")
    vocab = model.hf.get_output_embeddings().weight.shape[0]
    same = text_chunks(model, ref.text, seq_len=ref.seq_len) == ref.chunks
    if not same or int(ref.top_ids.max()) >= vocab:
        raise InterpError("the model tokenizes the reference's text differently, or has a "
                          "smaller vocabulary: KL needs the tokenizer the reference was taken with")
