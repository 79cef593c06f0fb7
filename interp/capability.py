"""Capability suites: evidence that a model still works after a weight edit.

- `factual_recall`: top-1 accuracy on one-token factual prompts ("The capital of France is" →
  " Paris"), with the mean log-probability of the answer.
- `perplexity`: token-level perplexity of held-out prose.
- `kl_divergence`: mean KL(reference ‖ model) of the next-token distributions at every position of
  the held-out prose; the reference is the model before the edit.
- `definitional`: definitional gender accuracy ("The king said that" → he beats she), computed by
  `interp.bias.measure`, so it is the same number the bias report shows.

Every suite returns a `CapabilityResult`: one headline value with a 95% percentile-bootstrap
interval, its sample size, and one row per item. `capability()` runs several into a
`CapabilityReport`.

Data (interp/data/):

- `facts.csv` (prompt, answer, category) holds only facts that the *unedited bundled model*
  (SmolLM2-135M-Instruct, float32) gets right: answers are one token with their leading space,
  and the model's greedy next token is the answer, ahead of the runner-up by at least 0.1 nats
  (so float noise cannot flip one). `benchmarks/make_facts.py` built it from 543 hand-written
  candidates (capitals, languages, chemical symbols, opposites, sequences, ...; no gendered
  answers): 486 have one-token answers, 235 of those were right, 232 with the margin. Re-run it
  to rebuild. On the bundled model the accuracy before an edit is 1.0 by construction, so any
  drop is damage the edit did; other models are scored on the same facts, for what it is worth.
- `heldout.txt`: about 2,600 words of neutral prose written for this project (weather, cooking,
  travel, science, history of tools). It is deliberately not `neutral.txt`, which feeds the edit's
  key statistics: perplexity measured on the text the edit protected would flatter the edit.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import metrics
from . import prompts as P
from .bias import measure
from .errors import EmptyPromptSetError, InterpError
from .forward import last_token_logprobs
from .io import atomic_dir, atomic_path
from .runner import Runner, pad_ids

SUITES = ("facts", "perplexity", "definitional", "kl")
DEFAULT_SUITES = ("facts", "perplexity", "definitional")
DEFAULT_TOP_K = 1024  # ~25 MB per reference on heldout.txt; see NextTokenLogprobs


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class CapabilityResult:
    """One suite's headline number with its 95% bootstrap interval, and one row per item.

    n counts the units the bootstrap resamples (facts, text chunks, prompts); `extra` holds
    secondary numbers (e.g. mean log p(answer), tokens scored)."""

    name: str
    metric: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    items: pd.DataFrame
    extra: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def row(self) -> dict:
        return {"suite": self.name, "metric": self.metric, "value": self.value,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n, **self.extra}

    def to_frame(self) -> pd.DataFrame:
        """The per-item rows (facts, chunks or prompts)."""
        return self.items.copy()

    def __repr__(self) -> str:
        return (f"CapabilityResult({self.name}: {self.metric} {self.value:.4g} "
                f"[{self.ci_low:.4g}, {self.ci_high:.4g}], n={self.n})")

    def save(self, directory: str | Path) -> Path:
        with atomic_dir(directory) as tmp:
            self._write(tmp)
        return Path(directory)

    def _write(self, directory: Path) -> None:
        self.items.to_csv(directory / "items.csv", index=False)
        head = {k: getattr(self, k) for k in ("name", "metric", "value", "ci_low", "ci_high", "n",
                                              "extra", "meta")}
        (directory / "result.json").write_text(json.dumps(head, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "CapabilityResult":
        directory = Path(directory)
        head = json.loads((directory / "result.json").read_text())
        return cls(items=pd.read_csv(directory / "items.csv"), **head)


class CapabilityReport:
    """Several suites' results for one model; `table()` has one row per suite."""

    def __init__(self, results: Sequence[CapabilityResult], meta: dict | None = None):
        self.results = {r.name: r for r in results}
        self.meta = meta or {}

    def __getitem__(self, name: str) -> CapabilityResult:
        return self.results[name]

    def __repr__(self) -> str:
        return f"CapabilityReport({self.meta.get('model', '?')}: {', '.join(self.results)})"

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([r.row() for r in self.results.values()]).set_index("suite")

    def to_frame(self) -> pd.DataFrame:
        """Every suite's per-item rows, stacked, with a `suite` column."""
        return pd.concat([r.items.assign(suite=name) for name, r in self.results.items()],
                         ignore_index=True)

    def save(self, directory: str | Path) -> Path:
        with atomic_dir(directory) as tmp:
            for name, r in self.results.items():
                (tmp / name).mkdir()
                r._write(tmp / name)
            self.table().to_csv(tmp / "table.csv")
            (tmp / "meta.json").write_text(json.dumps(
                {**self.meta, "suites": list(self.results)}, indent=2))
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> "CapabilityReport":
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        suites = meta.pop("suites")
        return cls([CapabilityResult.load(directory / s) for s in suites], meta)


def _meta(model) -> dict:
    return {"model": model.name, "fingerprint": model.fingerprint()}


def _ratio_ci(num, den, *, n_boot: int, seed: int) -> tuple[float, float]:
    """Bootstrap interval of sum(num)/sum(den) resampling units (chunks): a per-token mean over
    chunks of unequal length. `metrics.bootstrap_ci` resamples unit indices."""
    num, den = np.asarray(num, float), np.asarray(den, float)

    def ratio(idx, axis):
        idx = idx.astype(int)
        return num[idx].sum(axis) / den[idx].sum(axis)

    return metrics.bootstrap_ci(np.arange(len(num)), statistic=ratio, n_boot=n_boot, seed=seed)


# ---------------------------------------------------------------------------------------------
# Factual recall


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
                            len(items), items, extra, _meta(model))


def _facts_frame(source) -> pd.DataFrame:
    if source is None:
        return facts()
    if isinstance(source, (str, Path)):
        source = pd.read_csv(source, keep_default_na=False)
    missing = {"prompt", "answer"} - set(source.columns)
    if missing:
        raise InterpError(f"facts need the columns prompt and answer; missing {sorted(missing)}")
    return source.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Held-out text: chunks and full next-token distributions


def heldout_text() -> str:
    return resources.files("interp.data").joinpath("heldout.txt").read_text()


def text_chunks(model, text: str | None = None, *, seq_len: int = 128) -> list[list[int]]:
    """The text's tokens in consecutive, non-overlapping windows of `seq_len` (the last may be
    shorter; a one-token remainder predicts nothing and is dropped)."""
    if seq_len < 2:
        raise InterpError(f"seq_len must be at least 2 (a window predicts its later tokens), "
                          f"not {seq_len}")
    ids = model.tokenizer(heldout_text() if text is None else text)["input_ids"]
    chunks = [ids[i:i + seq_len] for i in range(0, len(ids), seq_len)]
    chunks = [c for c in chunks if len(c) >= 2]
    if not chunks:
        raise EmptyPromptSetError("the text is too short: it needs at least two tokens")
    return chunks


@torch.no_grad()
def chunk_logprobs(model, chunks: list[list[int]], *, batch_size: int = 8):
    """Yield (chunk indices, (rows, width, vocab) float32 log-probs, lengths) batch by batch.

    Right padding without an attention mask is exact: causal attention keeps every pad token
    after the real ones, out of their view."""
    runner = Runner(model)
    for s in range(0, len(chunks), batch_size):
        batch = list(range(s, min(s + batch_size, len(chunks))))
        ids = pad_ids(model, [chunks[i] for i in batch])
        hidden = runner.final_hidden(runner.embed(ids), 0)
        logprobs = runner.unembed(hidden).float().log_softmax(-1)
        yield batch, logprobs, [len(chunks[i]) for i in batch]


# ---------------------------------------------------------------------------------------------
# Perplexity


def perplexity(model, text: str | None = None, *, seq_len: int = 128, batch_size: int = 8,
               n_boot: int = 1000, seed: int = 0) -> CapabilityResult:
    """exp(mean next-token NLL over every predicted token) of the held-out text (or `text`), cut
    into windows of `seq_len`; each window's first token is context only (no BOS is added, as
    the tokenizer adds none). The CI is the bootstrap CI over windows of the per-token mean NLL,
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
                            float(np.exp(hi)), len(chunks), items, extra, _meta(model))


# ---------------------------------------------------------------------------------------------
# KL divergence to a reference


@dataclass
class NextTokenLogprobs:
    """A model's next-token distributions at every position of a text, stored compactly: the
    `top_k` most likely tokens' log-probs and the log of the remaining mass ("tail").

    Full float32 distributions over the 49,152-token vocabulary at ~3,000 positions would take
    ~590 MB; top-1024 takes ~25 MB. KL against it treats the tail as one outcome, which by the
    data-processing inequality is a lower bound on the exact KL, short only by the reference's
    tail mass times the KL within the tail (how the model reshuffles tokens the reference found
    very unlikely). With top_k >= vocab size it is exact. On the bundled model the top 1024
    tokens leave 1.9% of the mass on average (27% at worst), and for a random nudge of one MLP
    the bound was 3% below the exact KL; pass the unedited model itself for the exact value."""

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
                             seq_len, _meta(model))


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
                            lo, hi, len(chunks), items, extra, _meta(model))


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


# ---------------------------------------------------------------------------------------------
# Definitional gender accuracy


def definitional(model, prompts=None, *, batch_size: int = 64, n_boot: int = 1000,
                 seed: int = 0) -> CapabilityResult:
    """Share of definitional prompts ("The king said that") where the pronoun matching the
    subject's gender is likelier than the other, from `interp.bias.measure` (the bias report's
    own per-prompt `definitional_correct`), with a bootstrap CI over prompts."""
    ps = P.definitional(model) if prompts is None else prompts
    frame = measure(model, ps, batch_size=batch_size)
    correct = frame["definitional_correct"].astype(float)
    lo, hi = metrics.bootstrap_ci(correct, n_boot=n_boot, seed=seed)
    keep = ["prompt_id", "text", "subject", "template", "expected", "p_male", "p_female",
            "definitional_correct"]
    items = frame[[c for c in keep if c in frame.columns]]
    extra = {"subjects": int(frame["subject"].nunique()),
             "mean_logodds_signed": float(_signed_logodds(frame).mean())}
    return CapabilityResult("definitional", "accuracy", float(correct.mean()), lo, hi,
                            int(correct.notna().sum()), items, extra, _meta(model))


def _signed_logodds(frame: pd.DataFrame) -> pd.Series:
    """log p(right pronoun) − log p(wrong one): how firmly, not only whether, it is right."""
    sign = np.where(frame["expected"] == "female", 1.0, -1.0)
    return frame["logodds"] * sign


# ---------------------------------------------------------------------------------------------
# Everything at once


def capability(model, suites: Sequence[str] = DEFAULT_SUITES, reference=None, *,
               text: str | None = None, batch_size: int = 8, n_boot: int = 1000,
               seed: int = 0) -> CapabilityReport:
    """Run the named suites; KL is added when a `reference` (a `NextTokenLogprobs` or a model)
    is given. `report.table()` has one row per suite. text: the held-out text for perplexity and
    KL (default interp/data/heldout.txt; a stored reference must have been taken on it).
    batch_size: windows per forward for the text suites (the prompt suites use 64)."""
    suites = list(suites)
    if reference is not None and "kl" not in suites:
        suites.append("kl")
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise InterpError(f"unknown capability suite(s) {unknown}; choose from {list(SUITES)}")
    if "kl" in suites and reference is None:
        raise InterpError("the kl suite needs a reference: next_token_logprobs(model) taken "
                          "before the edit, or the unedited model")
    boot = {"n_boot": n_boot, "seed": seed}
    run = {"facts": lambda: factual_recall(model, **boot),
           "perplexity": lambda: perplexity(model, text, batch_size=batch_size, **boot),
           "definitional": lambda: definitional(model, **boot),
           "kl": lambda: kl_divergence(model, reference, text, batch_size=batch_size,
                                       **boot)}
    return CapabilityReport([run[s]() for s in suites], _meta(model))
