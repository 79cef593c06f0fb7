"""Second-moment statistics of MLP keys, C = E[k kᵀ], over neutral text.

The LSDM/MEMIT solve uses C to protect what the MLP does on ordinary text. Keys are the inputs of
the MLP down projection at every token of the corpus; their outer products accumulate in float64,
chunk by chunk, and the result is cached on disk keyed by the model fingerprint, the layer, the
corpus and the token count.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch

from ..common.errors import InterpError
from ..common.io import atomic_path, cache_dir
from ..model.forward import batches
from ..model.runner import Runner, capture, device_rows, pad_ids
from ..model.tokens import windows

STARTERS = ("The", "In", "A", "It", "When", "Today", "There", "After", "Many", "This", "For",
            "Most")


def neutral_text() -> str:
    return resources.files("interp.data").joinpath("neutral.txt").read_text()


def sample(model, starts: list[str], length: int, *, top_k: int = 50) -> list[list[int]]:
    """Continue each start text by `length` tokens sampled top-k (seed the caller's RNG). Our own
    loop over the Runner with a key/value cache: `generate` through the bridge's wrapped modules
    is tens of times slower."""

    runner = Runner(model)
    ids = torch.tensor([model.tokenizer(s)["input_ids"] for s in starts], device=model.device)
    rows, cache, x = [ids], None, runner.embed(ids)
    with torch.no_grad():
        for _ in range(length):
            hidden, cache = runner.final_hidden(x, 0, prefix=cache, keep_cache=True)
            top = runner.unembed(hidden[:, -1]).float().topk(top_k, dim=-1)
            nxt = top.indices.gather(1, torch.multinomial(top.values.softmax(-1), 1))
            rows.append(nxt)
            x = runner.embed_at(nxt, cache.get_seq_length())
    return torch.cat(rows, dim=1).tolist()


SAMPLE_LENGTH = 128


def sample_text(model, n_tokens: int, *, seed: int = 0, length: int = SAMPLE_LENGTH,
                batch_size: int = 64, top_k: int = 50) -> list[list[int]]:
    """Token sequences sampled from the model itself (seeded, top-k), starting from common
    openers (each start text must be one token long, so a batch needs no padding)."""
    out, produced = [], 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        while produced < n_tokens:
            # The last batch only as large as needed: sampling is the slow part of the statistics.
            rows = min(batch_size, -(-(n_tokens - produced) // (length + 1)))
            starts = [STARTERS[(len(out) + i) % len(STARTERS)] for i in range(rows)]
            for row in sample(model, starts, length, top_k=top_k):
                out.append(row)
                produced += len(row)
    return out


SHIPPED_SAMPLES = "bundled_samples.pt"


def shipped_samples(fingerprint: str, n_tokens: int, seed: int) -> list[list[int]] | None:
    """The bundled model's own samples for the default statistics, shipped with the package
    (benchmarks/make_samples.py writes and checks them): what `sample_text` gives for these
    weights, seed and token count, without the minute or two of sampling. None for any other
    model, seed or count."""
    res = resources.files("interp.data").joinpath(SHIPPED_SAMPLES)
    if not res.is_file():
        return None
    with resources.as_file(res) as path:
        shipped = torch.load(path)
    key = (fingerprint, seed, n_tokens, SAMPLE_LENGTH)
    if key != (shipped["fingerprint"], shipped["seed"], shipped["n_tokens"], shipped["length"]):
        return None
    return shipped["rows"]


def cached_samples(model, n_tokens: int, seed: int) -> list[list[int]]:
    """`sample_text`, kept on disk per model fingerprint: sampling costs more than reading the
    statistics it names, so a cached run must not sample again just to find its cache key."""
    name = f"seed{seed}-{n_tokens}-len{SAMPLE_LENGTH}.pt"
    path = cache_dir() / "samples" / model.fingerprint() / name
    if path.exists():
        return torch.load(path)
    seqs = shipped_samples(model.fingerprint(), n_tokens, seed)
    if seqs is not None:
        return seqs
    seqs = sample_text(model, n_tokens, seed=seed)
    with atomic_path(path) as tmp:
        torch.save(seqs, tmp)
    return seqs


def corpus_tokens(model, corpus, n_tokens: int, seed: int = 0,
                  seq_len: int = 128) -> tuple[list[list[int]], str]:
    """Token sequences of at most `seq_len` for the statistics, and a hash naming the corpus.

    corpus: None (the bundled neutral text, then model samples up to `n_tokens`), or a list of
    texts or text-file paths (used as they are, up to `n_tokens`)."""
    tok = model.tokenizer
    if corpus is None:
        texts, name = [neutral_text()], f"neutral+samples:{seed}"
    else:
        texts = [Path(c).read_text() if Path(str(c)).is_file() else str(c) for c in corpus]
        name = "texts"
    seqs = []
    for t in texts:  # each window starts as the tokenizer starts a text (Gemma's <bos>)
        seqs.extend(windows(tok, t, seq_len))
    have = sum(map(len, seqs))
    if corpus is None and have < n_tokens:
        seqs.extend(cached_samples(model, n_tokens - have, seed))
    if not seqs or sum(map(len, seqs)) == 0:
        raise InterpError("the statistics corpus is empty: pass texts or files with some text")
    kept, count = [], 0
    for s in seqs:
        if count >= n_tokens:
            break
        s = s[: n_tokens - count]
        kept.append(s)
        count += len(s)
    h = hashlib.sha256(name.encode())
    for s in kept:
        h.update(str(s).encode())
    return kept, h.hexdigest()[:16]


def key_second_moments(model, layers: Sequence[int], *, corpus=None, n_tokens: int = 20000,
                       seed: int = 0, batch_size: int = 16, use_cache: bool = True,
                       component: str = "mlp",
                       progress: bool | None = None) -> dict[int, torch.Tensor]:
    """C_l = E[k kᵀ] (float64, width × width) of the keys of `component` ("mlp": the MLP down
    projection's input, d_mlp wide; "attn": the attention output projection's input, heads ×
    d_head wide) at each layer, over the corpus."""
    for l in layers:
        model.arch.check_layer(l)
    hook = {l: model.arch.key_hook(component, l) for l in layers}
    fingerprint = model.fingerprint()
    seqs, corpus_hash = corpus_tokens(model, corpus, n_tokens, seed)
    total = sum(map(len, seqs))
    prefix = "" if component == "mlp" else f"{component}-"  # MLP files keep their old names
    paths = {l: cache_dir() / "stats" / fingerprint / f"{prefix}layer{l}-{corpus_hash}-{total}.pt"
             for l in layers}
    result = {}
    if use_cache:
        for l, p in paths.items():
            if p.exists():
                result[l] = torch.load(p)
    todo = [l for l in layers if l not in result]
    if not todo:
        return result
    d = model.arch.key_width(component)
    sums = {l: torch.zeros((d, d), dtype=torch.float64, device=model.device) for l in todo}
    count = 0

    runner = Runner(model)
    seqs = sorted(seqs, key=len)
    batch_size = device_rows(model, batch_size, len(seqs[-1]))
    for batch in batches(seqs, batch_size, progress=progress, desc="key statistics"):
        ids = pad_ids(model, batch)
        lengths = torch.tensor([len(s) for s in batch], device=model.device)
        mask = torch.arange(ids.shape[1], device=model.device) < lengths.unsqueeze(1)
        keys, hooks = capture([hook[l] for l in todo])
        with torch.no_grad(), model.bridge.hooks(fwd_hooks=hooks):
            runner.final_hidden(runner.embed(ids), 0, stop=max(todo) + 1)
        for l in todo:
            k = keys[hook[l]][mask].flatten(1).double()
            sums[l] += k.T @ k
        count += int(mask.sum())
    for l in todo:
        result[l] = (sums[l] / count).cpu()  # cached and loaded alike on any device
        if use_cache:
            with atomic_path(paths[l]) as tmp:
                torch.save(result[l], tmp)
    return result
