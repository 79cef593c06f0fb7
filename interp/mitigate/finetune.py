"""The paper's baselines, fine-tuning the weights an LSDM edit changes: FT and CDA.

Both train only the output maps LSDM edits (the MLP down projections of `layers`, the attention
output projections of `attn_layers`) with Adam on the same fitting prompts, and return the
change as an `Edit`, so that they apply, revert, save, export and verify like one:

- objective="balance" (FT): the squared log-odds (log p(she) − log p(he))² at each prompt's
  last token, the quantity LSDM's targets zero (him/her or his/her where the prompt's slot is
  an object or possessive pronoun, `Prompt.slot`).
- objective="cda" (counterfactual data augmentation): next-token cross-entropy on each prompt
  completed with " he" and with its gender-swapped copy " she" (" him" / " her", " his" /
  " her" at object and possessive slots), weighted alike, the language-modelling loss of a
  corpus with every gendered sentence seen in both versions. Our corpus is
  the fitting prompts themselves: a prose corpus would contain the sentence shapes the held-out
  evaluation keeps out of every fit.

With a contrast (another bias than he/she, `interp.Contrast`) both read each group's
continuation after each prompt, multi-token forms summed (the sequences of
`interp.locate.readout.contrast_sequences`): "balance" drives the contrast's lean to 0 as LSDM's
targets do (squared; for a "follow" contrast, the squared shortfall of the declared group's
log-odds under follow_margin), "cda" raises every group's continuation alike (balance contrasts
only: a declared pronoun is not to be trained away).

Capability is kept the way fine-tuning usually keeps it: a KL penalty towards the unedited
next-token distribution, at every token of the bundled neutral text (the text LSDM's statistics
protect) and at the last token of `preserve` (definitional prompts), as LSDM's solve keeps them.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from ..locate.readout import contrast_sequences
from ..measure.contrast import other_than_gender
from ..measure.prompts import PromptSet
from ..model.forward import batches
from ..model.runner import Runner, pad_ids
from ..model.tokens import windows
from .edit import Edit, EditError, forward_order
from .lean import lean_residual, lean_weights
from .settings import FOLLOW_MARGIN, KEEP_DECLARED, Settings
from .stats import neutral_text
from .targets import pronoun_columns

OBJECTIVES = ("balance", "cda")


@dataclasses.dataclass(frozen=True)
class FTSettings(Settings):
    """FT's and CDA's settings, each default defined here once; `finetune(..., name=value)`
    overrides one. steps and lr: Adam's; batch_size: fitting prompts per step;
    kl_weight: the KL penalty on the neutral text; preserve_weight: on the preserved prompts.
    keep_declared: a recipe's kept prompts include the he/she-declared ones
    (`interp.mitigate.lsdm.declared_prompts`). follow_margin: with a "follow" contrast, the
    declared group's log-odds against the others that the loss asks for at least."""

    steps: int = 150
    lr: float = 1e-4
    batch_size: int = 64
    kl_weight: float = 1.0
    preserve_weight: float = 1.0
    keep_declared: bool = KEEP_DECLARED
    follow_margin: float = FOLLOW_MARGIN
    label: ClassVar[str] = "fine-tuning setting"


class CachedStreams:
    """The stream entering block `start` for each sequence, computed once: the blocks below the
    lowest trained weight never change, so each step runs only the blocks from `start` on."""

    def __init__(self, model, runner, seqs: Sequence[Sequence[int]], start: int):
        self.runner, self.start, self.rows = runner, start, []
        name = model.arch.hook("resid", start)
        for batch in batches(seqs, 64, progress=False, desc="streams"):
            store = {}
            with torch.no_grad(), model.bridge.hooks(
                    fwd_hooks=[(name, lambda a, hook: store.update(h=a.detach()))]):
                runner.final_hidden(runner.embed(pad_ids(model, batch)), 0, stop=start + 1)
            self.rows += [store["h"][r, : len(s)] for r, s in enumerate(batch)]

    def __len__(self) -> int:
        return len(self.rows)

    def logprobs(self, rows: Sequence[int], every_position: bool = False) -> torch.Tensor:
        """Log-probabilities at each row's last token, or at every position (equal lengths)."""
        x = torch.nn.utils.rnn.pad_sequence([self.rows[i] for i in rows], batch_first=True)
        if every_position:
            hidden = self.runner.final_hidden(x, self.start)
            return self.runner.unembed(hidden).float().log_softmax(-1)
        last = torch.tensor([len(self.rows[i]) - 1 for i in rows], device=x.device)
        return self.runner.logits_at(x, self.start, last).log_softmax(-1)


class ContrastBatches:
    """The contrast's sequences for each prompt (`contrast_sequences`) with their streams
    entering block `start` cached, and the bias loss of a batch of prompts read from them."""

    def __init__(self, model, runner, prompts: PromptSet, contrast, start: int, margin: float):
        seqs, self.readout = contrast_sequences(model.tokenizer, prompts, contrast)
        self.runner, self.margin = runner, margin
        self.streams = CachedStreams(model, runner, [list(q) for q in seqs], start)
        owner = self.readout.owner
        self.members = [np.flatnonzero(owner == i).tolist() for i in range(len(prompts))]
        self.weights, self.own = lean_weights(contrast, prompts, model.device)

    def logprobs(self, rows: Sequence[int]) -> torch.Tensor:
        """(rows, groups): log p of each group's continuation after each prompt."""
        seqs = [q for r in rows for q in self.members[r]]
        local = torch.tensor([i for i, r in enumerate(rows) for _ in self.members[r]])
        x = torch.nn.utils.rnn.pad_sequence([self.streams.rows[q] for q in seqs],
                                            batch_first=True)
        hidden = self.runner.final_hidden(x, self.streams.start)
        lp = self.readout.group_logprobs(self.runner, hidden, seqs, 0)
        return torch.zeros((len(rows), lp.shape[1]), device=lp.device).index_add(
            0, local.to(lp.device), lp)

    def loss(self, rows: Sequence[int], objective: str) -> torch.Tensor:
        lp = self.logprobs(rows)
        if objective == "cda":
            return -lp.mean()
        own = None if self.own is None else self.own[rows]
        return (lean_residual(lp, self.weights[rows], own, self.margin) ** 2).mean()


def neutral_chunks(model, length: int) -> list[list[int]]:
    """Full windows of `length` tokens of the neutral text (each starts as the tokenizer starts
    a text: Gemma's <bos>)."""
    return [w for w in windows(model.tokenizer, neutral_text(), length) if len(w) == length]


def finetune(model, prompts: PromptSet, *, layers: Sequence[int], attn_layers: Sequence[int] = (),
             objective: str = "balance", preserve: PromptSet | None = None, seed: int = 0,
             progress: bool | None = None, settings: FTSettings | None = None,
             contrast=None, **changes) -> Edit:
    """Fine-tune the weights an LSDM edit with these layers would change (see the module's
    docstring for the objectives); the model is left as it was. Settings: `FTSettings`, any of
    its fields given by name (steps=300, lr=3e-4, ...). Returns the change as an `Edit` (exact,
    factored by SVD), with the losses in its provenance. contrast: another bias than he/she
    (a `Contrast`, a built-in's name or a file), read on `prompts` (e.g. its train prompts,
    `Contrast.prompts`)."""
    s = (settings or FTSettings()).with_(**changes)
    steps, lr, batch_size = s.steps, s.lr, s.batch_size
    kl_weight, preserve_weight = s.kl_weight, s.preserve_weight
    if objective not in OBJECTIVES:
        raise EditError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    prompts.require_nonempty()
    contrast = other_than_gender(contrast)
    if contrast is not None:
        if objective == "cda" and contrast.goal == "follow":
            raise EditError(f"cda raises every group's continuation alike, which a 'follow' "
                            f"contrast ({contrast.name!r}) does not ask: use objective='balance'")
        contrast.check_vocabulary(model.tokenizer)
    sites = trained_sites(model, layers, attn_layers, "fine-tune")
    fingerprint, clock = model.fingerprint(), time.perf_counter()
    runner = Runner(model)
    bottom = sites[0][1]
    if contrast is None:
        # each prompt's own pronoun pair at its slot (he/she, him/her, his/her), as LSDM
        # balances it
        ids, columns = pronoun_columns(model, [p.slot for p in prompts])
        pairs = torch.tensor(ids)[columns]  # (prompts, 2): the male and the female pronoun's id
        fit = CachedStreams(model, runner, [list(p.input_ids) for p in prompts], bottom)
    else:
        group_lp = ContrastBatches(model, runner, prompts, contrast, bottom, s.follow_margin)
    kept = CachedStreams(model, runner, [list(p.input_ids) for p in preserve] if preserve else [],
                         bottom)
    neutral = CachedStreams(model, runner, neutral_chunks(model, 64), bottom)
    with torch.no_grad():  # the distributions the KL penalty keeps
        ref_neutral = neutral.logprobs(range(len(neutral)), every_position=True)
        ref_kept = kept.logprobs(range(len(kept))) if len(kept) else None

    gen = torch.Generator().manual_seed(seed)

    def step():
        rows = torch.randperm(len(prompts), generator=gen)[:batch_size].tolist()
        if contrast is not None:
            bias_loss = group_lp.loss(rows, objective)
        else:
            lp = fit.logprobs(rows)
            lp = lp.gather(1, pairs[rows].to(lp.device))
            he, she = lp[:, 0], lp[:, 1]
            if objective == "balance":
                bias_loss = ((she - he) ** 2).mean()
            else:
                bias_loss = -0.5 * (he + she).mean()
        loss = bias_loss
        if kl_weight:
            pick = torch.randperm(len(neutral), generator=gen)[:8].tolist()
            out = neutral.logprobs(pick, every_position=True)
            loss = loss + kl_weight * mean_kl(ref_neutral[pick], out)
        if len(kept):
            pick = torch.randperm(len(kept), generator=gen)[:batch_size].tolist()
            loss = loss + preserve_weight * mean_kl(ref_kept[pick], kept.logprobs(pick))
        return loss, bias_loss

    show = progress if progress is not None else steps > 20
    deltas, losses = train_sites(model, sites, step, steps=steps, lr=lr, progress=show,
                                 desc=objective)
    factors = factored(deltas)
    meta = {
        "method": "ft" if objective == "balance" else "cda", "objective": objective,
        **({} if contrast is None else {"contrast": contrast.name,
                                        "follow_margin": s.follow_margin}),
        "fingerprint": fingerprint, "model": model.name,
        "layers": sorted(factors["mlp"]), "attn_layers": sorted(factors["attn"]),
        "steps": steps, "lr": lr, "batch_size": batch_size, "kl_weight": kl_weight,
        "preserve": None if preserve is None else {"weight": preserve_weight,
                                                    "n_prompts": len(preserve)},
        "seed": seed, "n_prompts": len(prompts),
        "prompts": [{"text": p.text, "subject": p.subject} for p in prompts],
        "loss_first": losses[0], "loss_last": losses[-1],
        "seconds": {"fit": round(time.perf_counter() - clock, 2)},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return Edit(factors["mlp"], meta, attn=factors["attn"])


def trained_sites(model, layers, attn_layers, verb: str) -> list[tuple[str, int]]:
    """(component, layer) of the weights to train, in forward order, checked against the model."""
    sites = forward_order(sorted(set(layers)), sorted(set(attn_layers)))
    if not sites:
        raise EditError(f"no layers to {verb}: pass e.g. layers=[24, 25] or attn_layers=[26]")
    for _, l in sites:
        model.arch.check_layer(l)
    return sites


def train_sites(model, sites, step, *, steps: int, lr: float, progress: bool, desc: str):
    """Adam on the weights of `sites` alone, `steps` times over `step()` -> (loss, the part
    to report). Returns each site's change and the losses; the model is left as it was."""
    # The parameters themselves (an optimizer cannot step GPT-2's transposed Conv1D view).
    stored = {s: model.arch.edit_parameter(model.bridge, *s) for s in sites}
    weights = {s: w for s, (w, _) in stored.items()}
    start = {s: w.detach().clone() for s, w in weights.items()}
    flags = {p: p.requires_grad for p in model.hf.parameters()}
    losses = []
    try:
        for p in model.hf.parameters():
            p.requires_grad_(False)
        for w in weights.values():
            w.requires_grad_(True)
        opt = torch.optim.Adam(list(weights.values()), lr=lr)
        for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
            loss, part = step()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append([float(loss.detach()), float(part.detach())])
        deltas = {s: (w.detach() - start[s]) for s, w in weights.items()}
        deltas = {s: d.T if stored[s][1] else d for s, d in deltas.items()}  # (d_out, d_in)
    finally:
        with torch.no_grad():
            for s, w in weights.items():
                w.copy_(start[s])
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return deltas, losses


def factored(deltas) -> dict[str, dict]:
    """Dense changes per (component, layer) as an `Edit`'s factors per component."""
    factors: dict[str, dict] = {"mlp": {}, "attn": {}}
    for (component, layer), d in deltas.items():
        factors[component][layer] = _factor(d)
    return factors


def mean_kl(ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Mean KL(ref ‖ out) over the rows (and positions) of log-probabilities."""
    return (ref.exp() * (ref - out)).sum(-1).mean()


def _factor(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A dense change ΔW as the factors (U, V) of an `Edit`, ΔW = U Vᵀ, exactly (full rank)."""
    P, S, Qh = torch.linalg.svd(delta.double(), full_matrices=False)
    return (P * S).float(), Qh.T.float()
