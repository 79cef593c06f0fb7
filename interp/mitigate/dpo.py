"""Direct preference optimisation (DPO, Rafailov et al. 2023) of the weights an LSDM edit changes.

The policy is the model with the output maps of `layers` (MLP down projections) and
`attn_layers` (attention output projections) trained; the reference is the same model as it was,
whose log-likelihoods are computed once before training. Per preference pair (x, chosen y_w,
rejected y_l), the loss is

    −log σ(β [(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))])

with log π(y|x) summed over y's tokens, plus the KL penalty towards the unedited next-token
distribution on the bundled neutral text that the FT baseline uses. The change comes back as an
`Edit`, so it applies, reverts, saves, exports, re-traces and audits like any other.

We write the loss ourselves rather than use TRL's DPOTrainer: only a few matrices train, from the
residual stream cached at the lowest of them (the blocks below never change), which a trainer
that runs the whole model per step cannot do (the time it takes: docs/studies.md).
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..measure.suites.likelihood import encode_continuations
from ..model.runner import Runner
from .edit import Edit, EditError
from .finetune import CachedStreams, factored, mean_kl, neutral_chunks, train_sites, trained_sites

PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


def _sequences(model, frame: pd.DataFrame):
    """Per preference pair, the token ids of prompt + chosen and prompt + rejected (chosen
    ones first), and where each continuation starts: the sequences the likelihood scorers
    score."""
    prompts = list(frame.prompt)
    ctx, cont = encode_continuations(model.tokenizer, prompts + prompts,
                                     list(frame.chosen) + list(frame.rejected))
    return [c + y for c, y in zip(ctx, cont)], [len(c) for c in ctx]


def _sums(streams: CachedStreams, rows: Sequence[int], seqs, starts) -> torch.Tensor:
    """log p(continuation | prompt), summed over the continuation's tokens, for `rows`."""
    x = torch.nn.utils.rnn.pad_sequence([streams.rows[i] for i in rows], batch_first=True)
    hidden = streams.runner.final_hidden(x, streams.start)
    who, pos, tok = [], [], []
    for k, i in enumerate(rows):
        for t in range(starts[i], len(seqs[i])):
            who.append(k)
            pos.append(t - 1)
            tok.append(seqs[i][t])
    who_t = torch.tensor(who, device=x.device)
    logits = streams.runner.unembed(hidden[who_t, torch.tensor(pos, device=x.device)]).float()
    lp = logits.log_softmax(-1).gather(-1, torch.tensor(tok, device=x.device)[:, None])[:, 0]
    return torch.zeros(len(rows), device=x.device).index_add(0, who_t, lp)


def _all_sums(streams: CachedStreams, seqs, starts, batch: int = 64) -> torch.Tensor:
    return torch.cat([_sums(streams, list(range(b, min(b + batch, len(seqs)))), seqs, starts)
                      for b in range(0, len(seqs), batch)])


def dpo(model, preferences: pd.DataFrame, *, layers: Sequence[int],
        attn_layers: Sequence[int] = (), beta: float = 0.1, epochs: int = 3,
        batch_size: int = 16, lr: float = 3e-4, kl_weight: float = 1.0, seed: int = 0,
        progress: bool | None = None) -> Edit:
    """Train the output maps of `layers` and `attn_layers` with DPO on `preferences` (a frame
    with prompt, chosen and rejected; e.g. `interp.studies.preference_pairs`), against the
    model as it is; the model is left unchanged. Returns the change as an `Edit` with the
    losses and the pairs in its provenance.

    lr: the default fits the story pairs' preferences; at a third of it the model instead
    drifted to one answer for every story (docs/studies.md)."""
    missing = [c for c in PREFERENCE_COLUMNS if c not in preferences.columns]
    if missing:
        raise EditError(f"preference pairs need a column {missing[0]!r} "
                        f"({', '.join(PREFERENCE_COLUMNS)})")
    if preferences.empty:
        raise EditError("no preference pairs to train on: the model may have judged every "
                        "story pair consistently (nothing to prefer)")
    sites = trained_sites(model, layers, attn_layers, "train")
    fingerprint, clock = model.fingerprint(), time.perf_counter()
    seqs, starts = _sequences(model, preferences)
    n = len(preferences)
    streams = CachedStreams(model, Runner(model), seqs, sites[0][1])
    neutral = CachedStreams(model, streams.runner, neutral_chunks(model, 64), sites[0][1])
    with torch.no_grad():
        ref = _all_sums(streams, seqs, starts)
        ref_neutral = neutral.logprobs(range(len(neutral)), every_position=True)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []

    def step():
        if not order:
            order.extend(torch.randperm(n, generator=gen).tolist())
        pick = [order.pop() for _ in range(min(batch_size, len(order)))]
        lp = _sums(streams, pick + [i + n for i in pick], seqs, starts)
        r = lp - ref[pick + [i + n for i in pick]]
        margin = beta * (r[: len(pick)] - r[len(pick):])
        loss = dpo_loss = -torch.nn.functional.logsigmoid(margin).mean()
        if kl_weight:
            rows = torch.randperm(len(neutral), generator=gen)[:8].tolist()
            loss = loss + kl_weight * mean_kl(ref_neutral[rows],
                                              neutral.logprobs(rows, every_position=True))
        return loss, dpo_loss

    steps = epochs * -(-n // batch_size)
    show = progress if progress is not None else steps > 20
    deltas, losses = train_sites(model, sites, step, steps=steps, lr=lr, progress=show,
                                 desc="dpo")
    factors = factored(deltas)
    meta = {
        "method": "dpo", "fingerprint": fingerprint, "model": model.name,
        # The loss reads the answer after the prompt's last token (what `interp.verify` shows).
        "site": "last",
        "layers": sorted(factors["mlp"]), "attn_layers": sorted(factors["attn"]),
        "beta": beta, "epochs": epochs, "steps": steps, "lr": lr, "batch_size": batch_size,
        "kl_weight": kl_weight, "seed": seed, "n_pairs": n,
        "pairs": preferences[list(PREFERENCE_COLUMNS)].to_dict("records"),
        "loss_first": losses[0], "loss_last": losses[-1],
        "seconds": {"fit": round(time.perf_counter() - clock, 2)},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return Edit(factors["mlp"], meta, attn=factors["attn"])


def preference_margins(model, preferences: pd.DataFrame, edit: Edit | None = None) -> np.ndarray:
    """log π(chosen|x) − log π(rejected|x) per pair, with `edit` applied if given: what DPO
    raises."""
    seqs, starts = _sequences(model, preferences)
    with (edit.applied(model) if edit is not None else contextlib.nullcontext()), \
            torch.no_grad():
        lp = _all_sums(CachedStreams(model, Runner(model), seqs, 0), seqs, starts)
    n = len(preferences)
    return (lp[:n] - lp[n:]).double().cpu().numpy()
