"""Factual recall: top-1 accuracy on one-token factual prompts ("The capital of France is" →
" Paris"), on the bundled facts (see the package docstring for how they were chosen).
"""

from __future__ import annotations

import warnings
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ...common.errors import EmptyPromptSetError, InterpError
from ...model.forward import last_token_logprobs
from .. import metrics
from .result import CapabilityResult, model_meta


def facts(model_or_tokenizer=None) -> pd.DataFrame:
    """The bundled facts (prompt, answer, category). Given a model or tokenizer, also the answer's
    token id; facts whose answer is not exactly one token there are dropped, with a warning that
    counts them (their rows are in `frame.attrs["dropped"]`)."""
    with resources.files("interp.data").joinpath("facts.csv").open() as f:
        frame = pd.read_csv(f, keep_default_na=False)
    if model_or_tokenizer is None:
        return frame
    return with_answer_ids(frame, model_or_tokenizer)


def with_answer_ids(frame: pd.DataFrame, model_or_tokenizer) -> pd.DataFrame:
    """`frame` with an `answer_id` column, keeping only rows whose answer is one token."""
    tokenizer = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    pieces = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in frame["answer"]]
    one = np.array([len(p) == 1 for p in pieces], dtype=bool)
    kept = frame[one].copy()
    kept["answer_id"] = [p[0] for p, ok in zip(pieces, one) if ok]
    kept = kept.reset_index(drop=True)
    kept.attrs["dropped"] = frame[~one].to_dict("records")
    if not one.all():
        warnings.warn(f"{int((~one).sum())} of {len(frame)} facts dropped: their answer is not "
                      "one token under this tokenizer", stacklevel=3)
    return kept


@torch.no_grad()
def recall_items(model, frame: pd.DataFrame, *, batch_size: int = 64) -> pd.DataFrame:
    """Per fact: the greedy next token, whether it is the answer, log p(answer), its rank, and
    the margin log p(answer) − log p(best other token) (> 0 exactly when it is right)."""
    ids = [model.tokenizer(p)["input_ids"] for p in frame["prompt"]]
    answer = torch.tensor(frame["answer_id"].tolist(), dtype=torch.long)
    parts = [_recall_slice(model, ids[s:s + 1024], answer[s:s + 1024], batch_size)
             for s in range(0, len(ids), 1024)]  # in slices: memory stays (slice, vocab)
    top, logp, rank, margin = (torch.cat(x) for x in zip(*parts))
    out = frame.copy()
    out["predicted"] = [model.tokenizer.decode([t]) for t in top.tolist()]
    out["correct"] = (top == answer).float().numpy()
    out["logp_answer"] = logp.double().numpy()
    out["rank"] = rank.numpy()
    out["margin"] = margin.double().numpy()
    return out


def _recall_slice(model, ids, answer: torch.Tensor, batch_size: int):
    lp = last_token_logprobs(model, ids, batch_size=batch_size)
    la = lp.gather(1, answer[:, None])
    others = lp.scatter(1, answer[:, None], float("-inf"))
    return lp.argmax(-1), la[:, 0], (lp > la).sum(-1), la[:, 0] - others.max(-1).values


def factual_recall(model, facts: pd.DataFrame | str | Path | None = None, *,
                   batch_size: int = 64, n_boot: int = 1000, seed: int = 0) -> CapabilityResult:
    """Top-1 accuracy on one-token factual prompts (greedy next token == answer), with a 95%
    bootstrap CI over facts; `extra` has the mean log p(answer). facts: the bundled set (None),
    a frame or a CSV path with columns prompt and answer (answers with their leading space)."""
    frame = _facts_frame(facts)
    frame = with_answer_ids(frame, model)
    if frame.empty:
        raise EmptyPromptSetError("no facts to score: every answer is more than one token")
    items = recall_items(model, frame, batch_size=batch_size)
    lo, hi = metrics.bootstrap_ci(items["correct"], n_boot=n_boot, seed=seed)
    extra = {"mean_logp_answer": float(items["logp_answer"].mean()),
             "dropped": len(frame.attrs["dropped"])}
    return CapabilityResult("facts", "accuracy", float(items["correct"].mean()), lo, hi,
                            len(items), items, extra, model_meta(model))


def _facts_frame(source) -> pd.DataFrame:
    if source is None:
        return facts()
    if isinstance(source, (str, Path)):
        source = pd.read_csv(source, keep_default_na=False)
    missing = {"prompt", "answer"} - set(source.columns)
    if missing:
        raise InterpError(f"facts need the columns prompt and answer; missing {sorted(missing)}")
    return source.reset_index(drop=True)
