"""Targets: residual vectors that balance the male and female pronoun at the edited token (he
and she, or him and her, his and her where a prompt's next word is an object or possessive).
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..measure import metrics
from ..measure.metrics import SLOT_PRONOUNS, Candidates
from ..model.runner import Runner, copy_cache, frozen, kv_prefix, pad_ids
from .edit import EditError
from .keys import Versions


class Downstream:
    """The versions' run after block `layer`, resumable with a change δ added at each version's
    subject-last token. Only positions from that token on depend on δ, so `logits` runs just those
    positions from block `layer` + 1, over the keys/values the unedited run left before them.

    at_subject: (versions, d_model) the unedited stream there."""

    def __init__(self, model, v: Versions, layer: int, chunk: int = 128):
        self.runner, self.layer = Runner(model), layer
        dev = model.device
        self.lengths = torch.tensor([len(s) for s in v.ids], device=dev)
        self.subj = torch.tensor(v.subject_last, device=dev)
        self.owner = torch.tensor(v.prompt, device=dev)
        name = model.arch.hook("resid_post", layer)
        self.at_subject = torch.empty((len(v.ids), model.arch.d_model), device=dev)
        # The text before the subject's last token is all the model has seen there: it runs
        # through every block once per distinct text (a subject's templates share it), with no
        # padding (one length per subject position). The rest of each version (the subject's
        # last token on) needs only blocks up to `layer`; the resumed runs do the others.
        # Versions run in chunks of one subject position each, small enough that a backward
        # right after its forward reuses memory instead of growing the heap.
        self.chunks = []
        for p in sorted(set(v.subject_last)):
            group = (self.subj == p).nonzero().squeeze(1)
            cache, where = None, None
            if p:
                heads = sorted({tuple(v.ids[i][:p]) for i in group.tolist()})
                where = {h: r for r, h in enumerate(heads)}
                with torch.no_grad():
                    _, cache = self.runner.final_hidden(
                        self.runner.embed(torch.tensor(heads, device=dev)), 0, keep_cache=True)
            for g in group.split(chunk):
                width = int(self.lengths[g].max())
                prefix = None
                if p:
                    rows = torch.tensor([where[tuple(v.ids[i][:p])] for i in g.tolist()],
                                        device=dev)
                    prefix = kv_prefix(cache, rows, p)
                tails = pad_ids(model, [v.ids[i][p:] for i in g.tolist()])
                store = {}
                with torch.no_grad(), model.bridge.hooks(
                        fwd_hooks=[(name, lambda a, hook, s=store: s.update(h=a))]):
                    self.runner.final_hidden(
                        self.runner.embed_at(tails, p), 0,
                        prefix=None if prefix is None else copy_cache(prefix), stop=layer + 1)
                start = store["h"].detach()  # the stream entering block layer + 1
                self.at_subject[g] = start[:, 0].float()
                self.chunks.append((p, g, start[:, : width - p], prefix))

    def hidden(self, row_delta: torch.Tensor):
        """Yields (version indices, their edited token's position p, final hidden states of
        positions p on) per chunk, with row_delta[i] added to version i's stream at position p."""
        for p, g, seg, prefix in self.chunks:
            x = seg.clone()
            x[:, 0] = x[:, 0] + row_delta[g]
            pre = None if prefix is None else copy_cache(prefix)
            yield g, p, self.runner.final_hidden(x, self.layer + 1, prefix=pre)

    def logits(self, row_delta: torch.Tensor, select=None):
        """Yields (version indices, next-token logits at their last token) per chunk, with
        row_delta[i] added to version i's stream at its subject-last token."""
        for g, p, hidden in self.hidden(row_delta):
            yield g, self.runner.unembed_at(hidden, self.lengths[g] - 1 - p, select=select)


def optimise_targets(model, v: Versions, layer: int, *, iters: int = 6, damping: float = 1e-2,
                     clamp_norm: float = 1.5, tol: float = 0.1, strict: bool = True,
                     progress: bool | None = None, objective=None):
    """Per edit subject, δ added to the residual stream after block `layer` at the subject's last
    token (in every version) so that log p(she) − log p(he) → 0 in all of its versions (or, with
    an `objective` such as `interp.mitigate.lean.ContrastLean`, its residual per version).

    Gauss–Newton (Levenberg–Marquardt) on the log-odds: each iteration takes the Jacobian of
    every version's log-odds with respect to its subject's δ (one forward and one backward) and
    moves δ by the damped least-norm step that zeroes them in the linearised model
    (`gauss_newton_step`), within ||δ|| ≤ clamp_norm · ||h||. A handful of iterations replaces
    hundreds of Adam steps, and the least-norm step changes the stream only along directions
    the log-odds read, which keeps the rest of the next-token distribution (the report gives
    the KL that remains, `PairLogOdds.compare`). Stops once the mean |log-odds| over all
    versions is under tol.

    Returns (targets h + δ (n, d_model) float64, report dict)."""
    odds = PairLogOdds(model, v, layer) if objective is None else objective
    dev, owner, at_subject = model.device, odds.owner, odds.at_subject
    n = int(owner.max()) + 1
    counts = torch.bincount(owner, minlength=n).unsqueeze(1)
    h0 = torch.zeros((n, at_subject.shape[-1]), device=dev).index_add_(0, owner, at_subject)
    h0 = h0 / counts
    bound = clamp_norm * h0.norm(dim=-1, keepdim=True)
    members = [(owner == s).nonzero().squeeze(1) for s in range(n)]
    delta = torch.zeros_like(h0)
    history, taken, retry = [], 0, False
    show = progress if progress is not None else len(v.ids) > 200
    bar = tqdm(total=iters, desc="targets", disable=not show, leave=False)
    while True:
        # A δ per version (all equal to their subject's): one backward gives every version's
        # own Jacobian row, since each version's log-odds reads only its own copy.
        # The Gauss–Newton rate so far predicts whether this forward is the final one; only a
        # forward that will step needs the backward (a misprediction costs one more forward).
        rate = history[-1] / history[-2] if len(history) > 1 else 1.0
        step = taken < iters and (retry or not (history and history[-1] * rate < tol))
        row_delta = delta[owner].clone().requires_grad_(step)
        with torch.set_grad_enabled(step), frozen(model):
            gaps = odds.forward(row_delta, backward=step)
        mean_gap = float(gaps.abs().mean())
        history.append(mean_gap)
        if mean_gap < tol or taken == iters:
            break
        retry = not step
        if retry:
            history.pop()  # the same δ again, this time with its gradient
            continue
        delta = gauss_newton_step(delta, row_delta.grad.double(), gaps.detach().double(),
                                  members, damping)
        delta = delta * (bound / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
        taken += 1
        bar.update()
    bar.close()
    per_subject = torch.zeros(n, device=dev).index_add_(0, owner, gaps.abs()) / counts.squeeze(1)
    bare = torch.tensor(v.context, device=dev) == 0
    kls, unedited = odds.compare(delta[owner])
    key = odds.key
    report = {"bare_unedited": unedited[bare],
              f"{key}_before": history[0], f"{key}_after": float(gaps.abs().mean()),
              "history": history,
              f"worst_subject_{key}": float(per_subject.max()),
              "kl_after": float(kls.mean()), "iterations": taken,
              "delta_norm_ratio": float((delta.norm(dim=-1) / h0.norm(dim=-1)).mean())}
    if report[f"{key}_after"] > tol:
        message = (f"the target optimisation did not converge: mean {odds.describe} is "
                   f"{report[f'{key}_after']:.3f} after {taken} iterations (tolerance "
                   f"{tol}). Give it more iterations, loosen clamp_norm, or raise tol.")
        if strict:
            raise EditError(message)
        import warnings

        warnings.warn(message, stacklevel=2)
    return (h0 + delta).double(), report


class PairLogOdds:
    """Every version's log-odds of its slot's pronoun pair (female over male) with a change δ
    added at its subject-last token after block `layer` (`Downstream`)."""

    key, describe = "abs_logodds", "|log p(she) − log p(he)|"

    def __init__(self, model, v: Versions, layer: int):
        pair, columns = pronoun_columns(model, v.slots or ["subject"] * len(v.ids))
        self.pair, self.columns = pair, columns.to(model.device)
        self.down, self.n, self.device = Downstream(model, v, layer), len(v.ids), model.device
        self.owner, self.at_subject = self.down.owner, self.down.at_subject

    def forward(self, row_delta: torch.Tensor, backward: bool) -> torch.Tensor:
        """Every version's log-odds; with backward, also their gradients (chunk by chunk, see
        Downstream). The softmax's normaliser cancels in the log-odds, so only the two
        pronouns' logits are computed: the unembedding is most of a top-layer edit's cost."""
        gaps = torch.zeros(self.n, device=self.device)
        for g, logits in self.down.logits(row_delta, select=self.pair):
            both = logits.gather(1, self.columns[g])
            gap = both[:, 1] - both[:, 0]
            if backward:
                gap.sum().backward()
            gaps[g] = gap.detach()
        return gaps

    @torch.no_grad()
    def compare(self, row_delta: torch.Tensor):
        """Each version's KL from the unedited next-token distribution, and its unedited
        (log p(male), log p(female)): one pass over the whole vocabulary, chunk by chunk."""
        kls = torch.zeros(self.n, device=self.device)
        unedited = torch.empty((self.n, 2), device=self.device)
        for (g, ref), (_, new) in zip(self.down.logits(torch.zeros_like(row_delta)),
                                      self.down.logits(row_delta)):
            ref, new = ref.log_softmax(-1), new.log_softmax(-1)
            kls[g] = (ref.exp() * (ref - new)).sum(-1)
            unedited[g] = ref[:, self.pair].gather(1, self.columns[g])
        return kls, unedited


def gauss_newton_step(delta: torch.Tensor, J: torch.Tensor, y: torch.Tensor, members,
                      damping: float) -> torch.Tensor:
    """δ after one damped least-norm step per subject: J (versions, d_model) the log-odds'
    gradients, y their values, members[s] the versions of subject s. The step zeroes the
    linearised log-odds: δ_s −= J_sᵀ (J_s J_sᵀ + μ I)⁻¹ y_s, μ = damping × mean diagonal."""
    delta = delta.clone()
    for s, r in enumerate(members):
        Js = J[r]
        A = Js @ Js.T
        A = A + damping * A.diagonal().mean().clamp_min(1e-12) * torch.eye(len(r), device=J.device,
                                                                          dtype=A.dtype)
        delta[s] -= (Js.T @ torch.linalg.solve(A, y[r])).float()
    return delta


def pronoun_columns(model, slots) -> tuple[list[int], torch.Tensor]:
    """The token ids of every pronoun the slots need, and per slot the columns (male, female)
    of its pair among them."""
    pairs = {s: Candidates.resolve(model, dict(zip(("male", "female"), SLOT_PRONOUNS[s]))).ids
             for s in dict.fromkeys(slots)}
    ids = list(dict.fromkeys(i for p in pairs.values() for i in (p["male"], p["female"])))
    col = {s: [ids.index(p["male"]), ids.index(p["female"])] for s, p in pairs.items()}
    return ids, torch.tensor([col[s] for s in slots])


def pronoun_bias(logprobs: torch.Tensor) -> dict:
    """Mean |log p(she) − log p(he)| and |p(he) − p(she)| over rows of (log p(he), log p(she))."""
    lp = logprobs.double().cpu().numpy()
    return {"abs_logodds": float(np.abs(metrics.logodds(lp[:, 0], lp[:, 1])).mean()),
            "abs_gap": float(metrics.abs_gap(np.exp(lp[:, 0]), np.exp(lp[:, 1])).mean())}
