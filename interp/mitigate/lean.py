"""The targets' objective for a contrast other than he/she: what an edit should do to each
fitted version's continuation, read through `Downstream` with every group's form (several
tokens where a form is: the version continued with the form's leading tokens, as a trace reads
it, interp/locate/readout.py).

- "balance": the trace's linear lean Σ_g w_g log p(form_g) → 0 (`Contrast.trace_weights`: two
  groups' log-odds, or the subject's stereotyped group against the mean of the others);
- "follow": the declared group's log-odds against all the others together, log p(own) −
  log Σ_{g≠own} p(g), at least `margin` (over 0 the declared group is the likeliest). A version
  already there has residual 0, and the least-norm step keeps it there.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from ..locate.readout import contrast_sequences
from .edit import EditError
from .keys import Versions
from .targets import Downstream


class ContrastLean:
    """Every version's residual on `contrast` with a change δ added at its edited token after
    block `layer` (the interface `optimise_targets` steps: `forward`, `compare`)."""

    key = "abs_residual"

    def __init__(self, model, v: Versions, layer: int, contrast, margin: float = 1.0):
        self.contrast, self.margin, self.device = contrast, margin, model.device
        self.describe = ("|lean|" if contrast.goal == "balance"
                         else f"shortfall of the declared group's log-odds under {margin}")
        items = [SimpleNamespace(input_ids=ids, slot=slot, group=g, declared=d)
                 for ids, slot, g, d in zip(v.ids, v.slots, v.groups, v.declared)]
        ids, self.readout = contrast_sequences(model.tokenizer, items, contrast)
        seq_of = self.readout.owner
        self.seq_version = torch.as_tensor(seq_of, device=model.device)
        pick = lambda values: [values[i] for i in seq_of]  # noqa: E731
        extended = Versions([list(s) for s in ids], pick(v.subject_last), pick(v.prompt),
                            v.prefixes, v.subjects, pick(v.context), pick(v.slots))
        self.down = Downstream(model, extended, layer)
        self.n = len(v.ids)
        self.owner = torch.as_tensor(v.prompt, device=model.device)
        first = np.searchsorted(seq_of, np.arange(self.n))  # sequences are in version order
        self.at_subject = self.down.at_subject[torch.as_tensor(first, device=model.device)]
        self.weights, self.own = lean_weights(contrast, items, model.device)

    def logprobs(self, row_delta: torch.Tensor, coef: torch.Tensor | None = None):
        """(versions, groups) log-probabilities of each group's form, δ added. With `coef`
        (versions, groups), also the gradient of Σ coef · log-probabilities into row_delta,
        chunk by chunk (each chunk's graph freed before the next, as `PairLogOdds` does)."""
        ext = row_delta.detach()[self.seq_version].requires_grad_(coef is not None)
        out = torch.zeros((self.n, self.weights.shape[1]), device=self.device)
        for g, p, hidden in self.down.hidden(ext):
            lp = self.readout.group_logprobs(self.down.runner, hidden, g.tolist(), p)
            version = self.seq_version[g]
            if coef is not None:
                (coef[version] * lp).sum().backward()
            out.index_add_(0, version, lp.detach())
        if coef is not None:
            torch.autograd.backward(row_delta[self.seq_version], ext.grad)
        return out

    def residual(self, lp: torch.Tensor) -> torch.Tensor:
        return lean_residual(lp, self.weights, self.own, self.margin)

    def forward(self, row_delta: torch.Tensor, backward: bool) -> torch.Tensor:
        """Every version's residual; with backward, also its gradient into row_delta (for
        "follow", whose residual is not linear in the log-probabilities, after a first pass
        that finds its slope)."""
        if not backward:
            with torch.no_grad():
                return self.residual(self.logprobs(row_delta))
        if self.own is None:
            coef = self.weights
        else:
            with torch.no_grad():
                lp = self.logprobs(row_delta)
            lp.requires_grad_(True)
            with torch.enable_grad():
                self.residual(lp).sum().backward()
            coef = lp.grad
        return self.residual(self.logprobs(row_delta, coef))

    @torch.no_grad()
    def compare(self, row_delta: torch.Tensor):
        """Each version's KL from the unedited next-token distribution at its prompt's last
        token, and its unedited log-probabilities per group."""
        kls = torch.zeros(self.n, device=self.device)
        unedited = torch.zeros((self.n, self.weights.shape[1]), device=self.device)
        ext = row_delta[self.seq_version]
        runner = self.down.runner
        for (g, p, ref), (_, _, new) in zip(self.down.hidden(torch.zeros_like(ext)),
                                            self.down.hidden(ext)):
            seqs = g.tolist()
            at = torch.as_tensor([int(self.readout.reads[s][0].min()) - p for s in seqs],
                                 device=self.device)
            rows = torch.arange(len(g), device=self.device)
            a = runner.unembed(ref[rows, at]).float().log_softmax(-1)
            b = runner.unembed(new[rows, at]).float().log_softmax(-1)
            # a version's sequences share its prompt's last token: the same KL, kept once
            kls[self.seq_version[g]] = (a.exp() * (a - b)).sum(-1)
            unedited.index_add_(0, self.seq_version[g],
                                self.readout.group_logprobs(runner, ref, seqs, p))
        return kls, unedited


def lean_residual(lp: torch.Tensor, weights: torch.Tensor, own: torch.Tensor | None,
                  margin: float) -> torch.Tensor:
    """What an edit drives to 0, per row of group log-probabilities `lp` (rows, groups): the
    linear lean Σ_g w_g lp_g for "balance" (own None); for "follow", how far the declared
    group's (`own`) log-odds against the others fall short of `margin` (0 once reached)."""
    if own is None:
        return (weights * lp).sum(-1)
    rows = torch.arange(lp.shape[0], device=lp.device)
    others = lp.masked_fill(torch.nn.functional.one_hot(own, lp.shape[1]).bool(), -torch.inf)
    lean = lp[rows, own] - others.logsumexp(-1)
    return (lean - margin).clamp(max=0.0)


def lean_weights(contrast, prompts, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per prompt (anything with `group` and `declared`): the lean's weights on the groups
    (`Contrast.trace_weights`), and for a "follow" contrast the declared group's index."""
    names = contrast.group_names
    weights = [contrast.trace_weights(p.group, p.declared) for p in prompts]
    w = torch.tensor([[x[g] for g in names] for x in weights], device=device)
    own = (torch.tensor([names.index(p.declared) for p in prompts], device=device)
           if contrast.goal == "follow" else None)
    return w, own


def prompts_to_fit(model, prompts, contrast, method: str):
    """`prompts`, or where none are given the train part of `contrast` (a resolved `Contrast`
    other than gender, or None: then prompts are required)."""
    if prompts is not None:
        return prompts
    if contrast is None:
        raise EditError(f"nothing for {method} to fit: pass prompts (e.g. "
                        "interp.prompts.contexts(model)) or contrast= (its train prompts are "
                        "fitted)")
    return contrast.prompts(model, "train")


def contrast_logprobs(model, contrast, prompts) -> np.ndarray:
    """(prompts, groups): log p of each group's form after each prompt (`Contrast.logprobs`)."""
    items = pd.DataFrame({"text": [p.text for p in prompts], "slot": [p.slot for p in prompts],
                          "group": [p.group for p in prompts],
                          "declared": [p.declared for p in prompts]})
    scored = contrast.logprobs(model, items, progress=False)
    return scored[list(contrast.group_names)].to_numpy()


def lean_measures(contrast, logprobs, prompts) -> dict:
    """An edit's measures on prompts scored per group (`contrast_logprobs`), from
    `Contrast.lean`. "balance": mean |lean| and, where subjects have a group, the share whose
    likeliest group is it; "follow": the share whose likeliest group is not the declared one
    (`missed`) and the mean lean (the declared group's log-odds against the others)."""
    scored = pd.DataFrame(np.asarray(logprobs, float), columns=list(contrast.group_names))
    scored["group"] = [p.group for p in prompts]
    scored["declared"] = [p.declared for p in prompts]
    frame = contrast.with_lean(scored)
    if contrast.goal == "follow":
        return {"missed": float((frame["top"] != frame["declared"]).mean()),
                "lean": float(frame["lean"].mean())}
    out = {"abs_lean": float(frame["lean"].abs().mean())}
    if frame["group"].notna().all():
        out["follows_group"] = float((frame["top"] == frame["group"]).mean())
    return out
