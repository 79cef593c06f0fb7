"""Log-likelihoods of sentences, continuations and sentence pairs under a causal LM.

A sentence's score is its log-likelihood summed over its tokens after the first:
log p(x_2..x_n | x_1). Where the tokenizer itself adds a BOS token (`bos=None`, the default,
follows the tokenizer; `bos=True` forces one), the BOS is prepended and every token is scored:
log p(x_1..x_n | BOS). The bundled tokenizer adds none, so the first token goes unscored and two
sentences that differ only in their first token tie. `span="shared"` scores only the tokens two
sentences share (a difflib alignment of their token ids), each conditioned on everything before
it: the causal analogue of CrowS-Pairs' own convention.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np

from ...common.errors import TokenizationError
from ...model.forward import padded_logits
from ...model.tokens import start_ids
from .errors import SuiteError
from .result import require_rows


def _bos_prefix(tokenizer, bos: bool | None) -> list[int]:
    if bos is False:
        return []
    bos_id = tokenizer.bos_token_id
    if bos is True:
        if bos_id is None:
            raise TokenizationError("bos=True, but this tokenizer has no BOS token; pass "
                                    "bos=None or bos=False")
        return [bos_id]
    # bos=None: do what the tokenizer does by default, so the model sees the inputs it was trained
    # on (SmolLM2's BOS is a chat marker it does not add; prepending it would distort scores).
    return start_ids(tokenizer)


def _encode(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    texts = [str(t) for t in texts]
    return list(tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else []


def encode_continuations(tokenizer, contexts: Sequence[str], continuations: Sequence[str], *,
                         sep: str = " ", bos: bool | None = None):
    """Token ids of each context (after the BOS prefix `bos` asks for) and of sep + each
    continuation, tokenized apart: a continuation's tokens are the same whatever the context,
    so every scorer of continuations (and DPO, which trains on them) sees the same sequences."""
    prefix = _bos_prefix(tokenizer, bos)
    ctx = [prefix + c for c in _encode(tokenizer, contexts)]
    return ctx, _encode(tokenizer, [sep + str(c) for c in continuations])


def _scored_logprobs(model, seqs: list[list[int]], starts: list[int], *, batch_size: int,
                     progress: bool | None) -> list[np.ndarray]:
    """Per sequence, log p(seq[t] | seq[:t]) for t = start .. len-1, as float64."""
    keys = [(tuple(s), int(st)) for s, st in zip(seqs, starts)]
    # Identical inputs share one computation, so identical sentences tie exactly (and are run once).
    unique = list(dict.fromkeys(keys))
    out: dict[tuple, np.ndarray] = {k: np.zeros(0) for k in unique if len(k[0]) <= k[1]}
    todo = sorted((k for k in unique if k not in out), key=lambda k: len(k[0]))
    for batch, ids, logits in padded_logits(model, [k[0] for k in todo], batch_size=batch_size,
                                            progress=progress, desc="log-likelihood"):
        logits = logits[:, :-1]
        # gather - logsumexp avoids materialising a second (batch, length, vocab) tensor
        lp = logits.gather(-1, ids[:, 1:, None])[..., 0] - logits.logsumexp(-1)
        lp = lp.double().cpu().numpy()
        for row, i in enumerate(batch):
            seq, start = todo[i]
            out[todo[i]] = lp[row, start - 1: len(seq) - 1]
    return [out[k] for k in keys]


def _text_token_logprobs(model, texts, *, bos, batch_size, progress):
    prefix = _bos_prefix(model.tokenizer, bos)
    ids = _encode(model.tokenizer, texts)
    scored = _scored_logprobs(model, [prefix + t for t in ids], [1] * len(ids),
                              batch_size=batch_size, progress=progress)
    if prefix:
        return ids, scored
    # Without a BOS the first token has no context: it stays unscored (NaN).
    padded = []
    for t, s in zip(ids, scored):
        a = np.full(len(t), np.nan)
        a[1:] = s
        padded.append(a)
    return ids, padded


def token_logprobs(model, texts: Sequence[str], *, bos: bool | None = None, batch_size: int = 16,
                   progress: bool | None = None) -> list[np.ndarray]:
    """Per text, log p(token | the tokens before it) for each of its tokens (no BOS among them);
    the first token is NaN where no BOS precedes it (see the module docstring)."""
    return _text_token_logprobs(model, texts, bos=bos, batch_size=batch_size,
                                progress=progress)[1]


def _reduce(values: np.ndarray, reduce: str) -> float:
    values = values[~np.isnan(values)]
    if reduce == "sum":
        return float(values.sum())
    if reduce == "mean":
        return float(values.mean()) if values.size else float("nan")
    raise SuiteError(f"reduce must be 'sum' or 'mean', not {reduce!r}")


def sentence_logprobs(model, texts: Sequence[str], *, reduce: str = "sum", bos: bool | None = None,
                      batch_size: int = 16, progress: bool | None = None) -> np.ndarray:
    """Log-likelihood of each text: the sum (or, with reduce="mean", the mean) of its scored
    tokens' log-probabilities, i.e. every token after the first, or every token after a BOS.
    Texts are run in batches with right padding and an attention mask; a text with nothing to
    score (one token, no BOS) gets 0.0 (sum) or NaN (mean)."""
    return np.array([_reduce(a, reduce) for a in token_logprobs(
        model, texts, bos=bos, batch_size=batch_size, progress=progress)], dtype=float)


def continuation_logprobs(model, contexts: Sequence[str], continuations: Sequence[str], *,
                          sep: str = " ", reduce: str = "sum", bos: bool | None = None,
                          batch_size: int = 16, progress: bool | None = None) -> np.ndarray:
    """log p(sep + continuation | context) per pair, summed (or averaged) over the continuation's
    tokens. Context and continuation are tokenized apart and joined, so the continuation's
    tokens are the same whatever the context."""
    if len(contexts) != len(continuations):
        raise SuiteError(f"{len(contexts)} contexts but {len(continuations)} continuations: "
                         "pass one context per continuation")
    ctx, cont = encode_continuations(model.tokenizer, contexts, continuations, sep=sep, bos=bos)
    seqs = [a + b for a, b in zip(ctx, cont)]
    starts = [max(1, len(a)) for a in ctx]
    scored = _scored_logprobs(model, seqs, starts, batch_size=batch_size, progress=progress)
    return np.array([_reduce(s, reduce) for s in scored], dtype=float)


def _shared_masks(x: Sequence[int], y: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    mx, my = np.zeros(len(x), bool), np.zeros(len(y), bool)
    for block in difflib.SequenceMatcher(None, list(x), list(y), autojunk=False) \
            .get_matching_blocks():
        mx[block.a: block.a + block.size] = True
        my[block.b: block.b + block.size] = True
    return mx, my


def pair_logprobs(model, first: Sequence[str], second: Sequence[str], *, span: str = "full",
                  bos: bool | None = None, batch_size: int = 16,
                  progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores of paired sentences. span="full": each sentence's log-likelihood
    (`sentence_logprobs`). span="shared": only the tokens the two share (difflib on token ids),
    each conditioned on everything before it: CrowS-Pairs' "score the unmodified tokens"."""
    first, second = [str(t) for t in first], [str(t) for t in second]
    if len(first) != len(second):
        raise SuiteError(f"{len(first)} first sentences but {len(second)} second ones")
    n = len(first)
    if span == "full":
        lp = sentence_logprobs(model, first + second, bos=bos, batch_size=batch_size,
                               progress=progress)
        return lp[:n], lp[n:]
    if span != "shared":
        raise SuiteError(f"span must be 'full' or 'shared', not {span!r}")
    ids, lps = _text_token_logprobs(model, first + second, bos=bos, batch_size=batch_size,
                                    progress=progress)
    a, b = np.zeros(n), np.zeros(n)
    for i in range(n):
        mx, my = _shared_masks(ids[i], ids[n + i])
        a[i], b[i] = np.nansum(lps[i][mx]), np.nansum(lps[n + i][my])
    return a, b


def score_pairs(model, items, suite: str, first: str, second: str, names: tuple[str, str], *,
                span: str, bos: bool | None, batch_size: int, progress: bool | None):
    """A pair suite's common start: a copy of `items` with the scores of its `first` and `second`
    sentence columns (`pair_logprobs`) added as the columns `names`; returns (frame, a, b)."""
    require_rows(items, suite)
    frame = items.copy()
    a, b = pair_logprobs(model, frame[first], frame[second], span=span, bos=bos,
                         batch_size=batch_size, progress=progress)
    frame[names[0]], frame[names[1]] = a, b
    return frame, a, b


def prefer(a, b) -> np.ndarray:
    """1 where a scores higher, 0 where b does, 0.5 on a tie."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.where(a > b, 1.0, np.where(a < b, 0.0, 0.5))
