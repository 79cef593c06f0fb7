"""LSDM: a least-squares (MEMIT-style) closed-form edit of the located MLP weights.

For each edit prompt, a key k (the MLP down-projection input at the subject's last token, averaged
over a few generated prefixes and the bare prompt) and a target v* (the residual stream after the
last edited layer, optimised so that p(he) = p(she)). Each edited layer, bottom first, solves

    ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹,   R = (V* − current outputs) / (layers left)

in float64, with C = E[k kᵀ] over neutral text protecting everything else the MLP does.

site="last" reads keys and sets targets at the prompt's last token instead (one per prompt
version), for top layers: there the edit sees the whole prompt, so it reaches occupations it
was not fitted on far better (README, benchmarks/edit_sites.py). `preserve` adds prompts whose
outputs must stay (definitional ones) to the solve.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics
from .errors import InterpError
from .metrics import Candidates
from .prompts import TEMPLATES, PromptSet, tokenize_prompt
from .runner import Runner, capture, copy_cache, frozen, kv_prefix, pad_ids


class EditError(InterpError):
    """An edit cannot be fitted or applied as asked."""


# The templates an edit is fitted on by default: three contexts before the subject (so its key
# is seen after "The" and after a clause) and continuations that lean he or she differently.
EDIT_TEMPLATES = ("The {} said that", "After the meeting, the {} said that",
                  "The {} smiled because")
# An edit at the last token learns from the continuation too, so it is fitted on every template
# (bundled model, test occupations: −73% |log-odds| and −0.3 pt definitional with all 18,
# against −68% and −1.4 pt with the first 12; those 12 carried over to the 6 unseen ones at −67%).
LAST_TOKEN_TEMPLATES = TEMPLATES


# ---------------------------------------------------------------------------------------------
# Prompts in context: the bare prompt and a few generated prefixes before it


@dataclass
class Versions:
    ids: list[list[int]]
    subject_last: list[int]
    prompt: list[int]  # index of the subject (one key and one target each) of every version
    prefixes: list[str]
    subjects: list[str]
    context: list[int] = field(default_factory=list)  # 0: the bare prompt, i: behind prefix i


def generated_prefixes(model, n: int, length: int, seed: int) -> list[str]:
    """Short seeded samples from the model, used as contexts before each prompt (as ROME does)."""
    from .stats import sample

    starters = ["The", "Therefore", "Because", "I", "You", "In", "It", "When"]
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(n):  # one at a time: starters may differ in length
            ids = sample(model, [starters[i % len(starters)]], length, top_k=5)[0]
            text = " ".join(model.tokenizer.decode(ids, skip_special_tokens=True).split())
            out.append(text.replace("{", "(").replace("}", ")"))
    return out


# Where an edit reads its keys and sets its targets, and that token's group in a trace.
SITE_TOKEN = {"subject": "last subject token", "last": "last token"}


def check_site(site: str) -> None:
    if site not in SITE_TOKEN:
        raise EditError(f"site must be one of {tuple(SITE_TOKEN)}, not {site!r}")


def versions(model, prompts: PromptSet, prefixes: Sequence[str], site: str = "subject") -> Versions:
    """Every prompt bare and behind each prefix, with the token each is edited at.

    site "subject": the subject's last token. Versions are grouped by subject: that token reads
    only the text before it, so one key (and one target) serves all of a subject's templates,
    and its target must balance them all. site "last": the prompt's last token, where the
    pronoun is predicted. Its key differs with every prefix, and near the top a single change
    there shifts all of them alike (the log-odds read the stream almost linearly), so each
    version has its own key and target: the prefixes only add examples."""
    check_site(site)
    index = {s: i for i, s in enumerate(prompts.subjects())}
    ids, last, owner, context, names = [], [], [], [], []
    for p in prompts:
        start = p.text.find(p.subject)
        for c, prefix in enumerate(["", *prefixes]):
            joint = f"{prefix}. {p.text}" if prefix else p.text
            offset = len(joint) - len(p.text)
            v = tokenize_prompt(model.tokenizer, joint, p.subject, subject_start=offset + start)
            if not hasattr(v, "input_ids"):
                continue  # this prefix merges with the subject's tokens: skip that version
            ids.append(list(v.input_ids))
            if site == "subject":
                last.append(v.subject_last)
                owner.append(index[p.subject])
            else:
                last.append(len(v.input_ids) - 1)
                owner.append(len(names))
                names.append(joint)
            context.append(c)
    return Versions(ids, last, owner, list(prefixes), names or list(index), context)


# ---------------------------------------------------------------------------------------------
# Reading keys and outputs at the subject's last token


class SubjectReader:
    """Activations at every version's subject-last token, averaged per edit prompt.

    That token reads only the tokens up to it, so each version is cut there and identical cuts
    (a subject's templates that share the text before it) run once, batched by length. A read
    can keep the stream entering a layer, and a later read can resume from it: the editor's
    bottom-up passes then run only the blocks an earlier layer's update can have changed."""

    def __init__(self, model, v: Versions, batch_size: int = 64):
        self.model, self.runner = model, Runner(model)
        cuts = [tuple(ids[: last + 1]) for ids, last in zip(v.ids, v.subject_last)]
        unique = sorted(set(cuts), key=len)
        where = {c: i for i, c in enumerate(unique)}
        dev = model.device
        self.batches = []
        for b in range(0, len(unique), batch_size):
            seqs = unique[b: b + batch_size]
            self.batches.append((pad_ids(model, seqs),
                                 torch.tensor([len(c) - 1 for c in seqs], device=dev)))
        self.pick = torch.tensor([where[c] for c in cuts], device=dev)
        self.owner = torch.tensor(v.prompt, device=dev)
        self.kept: tuple[int, list] | None = None  # (layer, stream entering it, per batch)

    @torch.no_grad()
    def read(self, names: Sequence[str], *, start: int = 0, stop: int | None = None,
             keep: int | None = None) -> dict[str, torch.Tensor]:
        """{name: (n_prompts, width) float64} running blocks start..stop − 1; start > 0 resumes
        from the stream kept by the previous read (which must have kept that layer). keep:
        also keep the stream entering this layer (start ≤ keep < stop)."""
        if start and (self.kept is None or self.kept[0] != start):
            raise EditError(f"no stream kept at layer {start} to resume from")
        hooks_keep = []
        if keep is not None and keep > start:
            hooks_keep = [self.model.arch.hook("resid", keep)]
        rows: dict[str, list] = {n: [] for n in names}
        kept = []
        for i, (ids, pos) in enumerate(self.batches):
            store, hooks = capture([*names, *hooks_keep])
            x = self.kept[1][i] if start else self.runner.embed(ids)
            with self.model.bridge.hooks(fwd_hooks=hooks):
                self.runner.final_hidden(x, start, stop=stop)
            if keep is not None:
                kept.append(store[hooks_keep[0]] if hooks_keep else x)
            r = torch.arange(len(pos), device=pos.device)
            for n in names:
                rows[n].append(store[n][r, pos].double())
        self.kept = (keep, kept) if keep is not None else None
        n_prompts = int(self.owner.max()) + 1
        counts = torch.bincount(self.owner, minlength=n_prompts).unsqueeze(1)
        out = {}
        for n in names:
            per_version = torch.cat(rows[n])[self.pick]
            total = torch.zeros((n_prompts, per_version.shape[1]), dtype=torch.float64,
                                device=per_version.device)
            out[n] = total.index_add_(0, self.owner, per_version) / counts
        return out


# ---------------------------------------------------------------------------------------------
# Targets: residual vectors that balance he and she


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
                self.at_subject[g] = start[:, 0]
                self.chunks.append((p, g, start[:, : width - p], prefix))

    def logits(self, row_delta: torch.Tensor, select=None):
        """Yields (version indices, next-token logits at their last token) per chunk, with
        row_delta[i] added to version i's stream at its subject-last token."""
        for p, g, seg, prefix in self.chunks:
            x = seg.clone()
            x[:, 0] = x[:, 0] + row_delta[g]
            pre = None if prefix is None else copy_cache(prefix)
            yield g, self.runner.logits_at(x, self.layer + 1, self.lengths[g] - 1 - p,
                                           prefix=pre, select=select)


def optimise_targets(model, v: Versions, layer: int, *, iters: int = 6, damping: float = 1e-2,
                     clamp_norm: float = 1.5, tol: float = 0.1, strict: bool = True,
                     progress: bool | None = None):
    """Per edit subject, δ added to the residual stream after block `layer` at the subject's last
    token (in every version) so that log p(she) − log p(he) → 0 in all of its versions.

    Gauss–Newton (Levenberg–Marquardt) on the log-odds: each iteration takes the Jacobian of
    every version's log-odds with respect to its subject's δ (one forward and one backward) and
    moves δ by the damped least-norm step that zeroes them in the linearised model, within
    ||δ|| ≤ clamp_norm · ||h||. A handful of iterations replaces hundreds of Adam steps, and the
    least-norm step changes the stream only along directions the log-odds read, which keeps the
    rest of the next-token distribution (the report gives the KL that remains). Stops once the
    mean |log-odds| over all versions is under tol.

    Returns (targets h + δ (n, d_model) float64, report dict)."""
    cands = Candidates.resolve(model)
    pair = [cands.ids["male"], cands.ids["female"]]
    down = Downstream(model, v, layer)
    dev, owner = model.device, down.owner
    base = {}  # the unedited log-probabilities per chunk: the first forward's (δ = 0)
    n = int(owner.max()) + 1
    counts = torch.bincount(owner, minlength=n).unsqueeze(1)
    h0 = torch.zeros((n, down.at_subject.shape[-1]), device=dev).index_add_(
        0, owner, down.at_subject)
    h0 = h0 / counts
    bound = clamp_norm * h0.norm(dim=-1, keepdim=True)

    def forward(row_delta, backward):
        """Every version's log-odds and its KL from the unedited next-token distribution;
        with backward, also the log-odds' gradients (chunk by chunk, see Downstream)."""
        gaps = torch.zeros(len(v.ids), device=dev)
        kls = torch.zeros(len(v.ids), device=dev)
        for i, (g, logits) in enumerate(down.logits(row_delta)):
            lp = logits.log_softmax(-1)
            gap = lp[:, pair[1]] - lp[:, pair[0]]
            if backward:
                gap.sum().backward()
            ref = base.setdefault(i, lp.detach())
            gaps[g] = gap.detach()
            kls[g] = (ref.exp() * (ref - lp.detach())).sum(-1)
        return gaps, kls

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
            gaps, kls = forward(row_delta, backward=step)
        mean_gap = float(gaps.abs().mean())
        history.append(mean_gap)
        if mean_gap < tol or taken == iters:
            break
        retry = not step
        if retry:
            history.pop()  # the same δ again, this time with its gradient
            continue
        J, y = row_delta.grad.double(), gaps.detach().double()
        for s, r in enumerate(members):
            Js = J[r]
            A = Js @ Js.T
            A = A + damping * A.diagonal().mean().clamp_min(1e-12) * torch.eye(len(r), device=dev,
                                                                              dtype=A.dtype)
            delta[s] -= (Js.T @ torch.linalg.solve(A, y[r])).float()
        delta = delta * (bound / delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
        taken += 1
        bar.update()
    bar.close()
    per_subject = torch.zeros(n, device=dev).index_add_(0, owner, gaps.abs()) / counts.squeeze(1)
    bare = torch.tensor(v.context, device=dev) == 0
    unedited = torch.empty((len(v.ids), 2), device=dev)
    for i, (_, g, _, _) in enumerate(down.chunks):
        unedited[g] = base[i][:, pair]
    report = {"bare_before": _pronoun_bias(unedited[bare]),
              "abs_logodds_before": history[0], "abs_logodds_after": float(gaps.abs().mean()),
              "history": history,
              "worst_subject_abs_logodds": float(per_subject.max()),
              "kl_after": float(kls.mean()), "iterations": taken,
              "delta_norm_ratio": float((delta.norm(dim=-1) / h0.norm(dim=-1)).mean())}
    if report["abs_logodds_after"] > tol:
        message = (f"the target optimisation did not converge: mean |log p(she) − log p(he)| is "
                   f"{report['abs_logodds_after']:.3f} after {taken} iterations (tolerance "
                   f"{tol}). Give it more iterations, loosen clamp_norm, or raise tol.")
        if strict:
            raise EditError(message)
        import warnings

        warnings.warn(message, stacklevel=2)
    return (h0 + delta).double(), report


def _pronoun_bias(logprobs: torch.Tensor) -> dict:
    """Mean |log p(she) − log p(he)| and |p(he) − p(she)| over rows of (log p(he), log p(she))."""
    lp = logprobs.double().cpu().numpy()
    return {"abs_logodds": float(np.abs(metrics.logodds(lp[:, 0], lp[:, 1])).mean()),
            "abs_gap": float(metrics.abs_gap(np.exp(lp[:, 0]), np.exp(lp[:, 1])).mean())}


# ---------------------------------------------------------------------------------------------
# The solve


def condition_number(A: torch.Tensor, L: torch.Tensor, iters: int = 50) -> float:
    """λ_max / λ_min of a symmetric positive definite A with Cholesky factor L, estimated by
    power iteration on A and on A⁻¹: a few hundred matrix-vector products where a full
    eigendecomposition (about a second at d_mlp = 1536) would cost more than the solve."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(A.shape[0], 1, generator=g, dtype=A.dtype).to(A.device)
    y = x.clone()
    top = bottom = torch.ones((), dtype=A.dtype)
    for _ in range(iters):
        x = A @ x
        top = x.norm()
        x = x / top
        y = torch.cholesky_solve(y, L)
        bottom = y.norm()
        y = y / bottom
    return float(top * bottom)


def solve_update(keys: torch.Tensor, residuals: torch.Tensor, C: torch.Tensor, lam: float,
                 max_cond: float = 1e12) -> tuple[torch.Tensor, torch.Tensor]:
    """ΔW = R Kᵀ (λC + K Kᵀ)⁻¹ in factored form (U, V) with ΔW = U Vᵀ.

    keys: (d_in, n) columns k_i; residuals: (d_out, n) columns r_i; C: (d_in, d_in)."""
    K, R, C = keys.double(), residuals.double(), C.double().to(keys.device)
    A = lam * C + K @ K.T
    L, info = torch.linalg.cholesky_ex(A)
    cond = condition_number(A, L) if int(info) == 0 else float("inf")
    if cond > max_cond:
        raise EditError(
            f"the key statistics are ill-conditioned (condition number of λC + KKᵀ about "
            f"{cond:.3g}): raise λ (now {lam}) or compute the statistics over more tokens"
        )
    V = torch.cholesky_solve(K, L)  # (d_in, n): A⁻¹ K, so ΔW = R (A⁻¹K)ᵀ
    return R, V


# ---------------------------------------------------------------------------------------------
# The Edit object


@dataclass
class Edit:
    """Per-layer low-rank weight updates ΔW_l = U_l V_lᵀ of the MLP down projections, plus
    provenance (`meta`): the model fingerprint it was fitted on, layers, λ, prompts, seeds,
    metrics."""

    updates: dict[int, tuple[torch.Tensor, torch.Tensor]]
    meta: dict = field(default_factory=dict)
    _backups: dict = field(default_factory=dict, repr=False)

    @property
    def layers(self) -> list[int]:
        return sorted(self.updates)

    def delta(self, layer: int) -> torch.Tensor:
        U, V = self.updates[layer]
        return U.double() @ V.double().T

    def __repr__(self) -> str:
        ranks = {l: self.updates[l][0].shape[1] for l in self.layers}
        return (f"Edit(layers={self.layers}, rank per layer={ranks}, λ={self.meta.get('lam')}, "
                f"fitted on {self.meta.get('fingerprint', '?')[:12]})")

    def apply(self, model):
        """Add the updates to the model's weights in place; returns the model."""
        if id(model) in self._backups:
            raise EditError("this edit is already applied to this model; revert it first")
        want, have = self.meta.get("fingerprint"), model.fingerprint()
        if want and want != have:
            raise EditError(
                f"this edit was fitted on a model with fingerprint {want}, but this model has "
                f"{have}: apply it to the model it was made for (revert any other edit first)"
            )
        backup = {}
        with torch.no_grad():
            for layer in self.layers:
                w = model.arch.mlp_down_weight(model.bridge, layer)
                backup[layer] = w.detach().clone()
                w.add_(self.delta(layer).to(device=w.device, dtype=w.dtype))
        self._backups[id(model)] = backup
        return model

    def is_applied(self, model) -> bool:
        """Whether this edit is applied to `model` now (by `apply`, not yet reverted)."""
        return id(model) in self._backups

    def revert(self, model):
        """Restore the weights exactly as they were before `apply`."""
        backup = self._backups.pop(id(model), None)
        if backup is None:
            raise EditError("this edit is not applied to this model")
        with torch.no_grad():
            for layer, saved in backup.items():
                model.arch.mlp_down_weight(model.bridge, layer).copy_(saved)
        return model

    @contextlib.contextmanager
    def applied(self, model):
        self.apply(model)
        try:
            yield model
        finally:
            self.revert(model)

    def save(self, path: str | Path) -> Path:
        """One safetensors file: U_l and V_l per layer, the provenance as its JSON metadata."""
        from safetensors.torch import save_file

        from .io import atomic_path

        tensors = {}
        for layer, (U, V) in self.updates.items():
            tensors[f"layer{layer}.U"] = U.contiguous()
            tensors[f"layer{layer}.V"] = V.contiguous()
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"interp_edit": json.dumps(self.meta)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "Edit":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["interp_edit"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        layers = sorted({int(k.split(".")[0][5:]) for k in tensors})
        return cls({l: (tensors[f"layer{l}.U"], tensors[f"layer{l}.V"]) for l in layers}, meta)


# ---------------------------------------------------------------------------------------------
# The editor


class _Clock:
    """Seconds spent per phase, kept in the edit's provenance (the speed benchmark reads them)."""

    def __init__(self):
        self.laps, self._t = {}, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 2)
        self._t = now


def lsdm(model, prompts: PromptSet, *, layers: Sequence[int] | None = None, lam: float = 3000.0,
         site: str = "subject", preserve: PromptSet | None = None, preserve_weight: float = 1.0,
         n_prefixes: int = 1, prefix_len: int = 8, iters: int = 6, clamp_norm: float = 1.5,
         tol: float = 0.1,
         stats_tokens: int = 20000, corpus=None, seed: int = 0, strict: bool = True,
         progress: bool | None = None) -> Edit:
    """Fit an LSDM edit that balances p(he) and p(she) on `prompts` (the model is left as it
    was; apply the returned `Edit` to change it).

    layers: MLP layers to edit, bottom first; None traces the prompts and takes
    `suggest_layers("mlp")`. lam: weight of the preservation statistics C.
    site: where the keys are read and the targets set: "subject" (the paper's LSDM: the
    subject's last token, one key per subject) or "last" (the prompt's last token, where the
    pronoun is predicted: one key per prompt; pair it with top layers).
    preserve: prompts whose next-token prediction must stay as it is (e.g. definitional ones,
    "The king said that"): their keys join the solve with the unedited outputs as targets,
    weighted by preserve_weight. The rest tunes the prefixes, the target optimisation and the
    statistics corpus (see their functions)."""
    prompts.require_nonempty()
    check_site(site)  # before a trace, which would take minutes
    if layers is None:
        from .trace import trace

        located = trace(model, prompts[:40], kinds=("mlp",), samples=3, seed=seed,
                        progress=progress)
        layers = located.suggest_layers("mlp", group=SITE_TOKEN[site])
    layers = sorted(set(int(l) for l in layers))
    if not layers:
        raise EditError("no layers to edit: pass e.g. layers=[0, 1, 2]")
    for l in layers:
        if not 0 <= l < model.arch.n_layers:
            raise EditError(f"layer {l} is outside the model: it has layers "
                            f"0..{model.arch.n_layers - 1}")
    clock = _Clock()
    fingerprint = model.fingerprint()
    prefixes = generated_prefixes(model, n_prefixes, prefix_len, seed)
    v = versions(model, prompts, prefixes, site)
    preserved = None
    if preserve is not None:
        preserve.require_nonempty()
        preserved = versions(model, preserve, prefixes, site)
    clock.lap("prefixes")
    from .stats import key_second_moments

    C = key_second_moments(model, layers, corpus=corpus, n_tokens=stats_tokens, seed=seed,
                           progress=progress)
    clock.lap("statistics")
    top = max(layers)
    targets, target_report = optimise_targets(model, v, top, iters=iters, clamp_norm=clamp_norm,
                                              tol=tol, strict=strict, progress=progress)
    clock.lap("targets")
    key_name = {l: model.arch.hook("mlp_key", l) for l in layers}
    out_name = model.arch.hook("resid_post", top)
    updates, backup = {}, {}
    reader = SubjectReader(model, v)
    if preserved is not None:
        preserved_reader = SubjectReader(model, preserved)
        scale = preserve_weight ** 0.5
    try:
        for i, layer in enumerate(layers):
            # Updates below `layer` change the stream entering it; the stream entering the
            # layer updated last is as the previous pass kept it.
            resume = {"start": layers[i - 1] if i else 0, "stop": top + 1, "keep": layer}
            cur = reader.read([key_name[layer], out_name], **resume)
            K = cur[key_name[layer]].T
            R = (targets - cur[out_name]).T / (len(layers) - i)
            if preserved is not None:
                more = preserved_reader.read([key_name[layer], out_name], **resume)
                if i == 0:  # nothing is updated yet: these are the outputs to keep
                    preserved_targets = more[out_name]
                K = torch.cat([K, scale * more[key_name[layer]].T], 1)
                R = torch.cat([R, scale * (preserved_targets - more[out_name]).T
                               / (len(layers) - i)], 1)
            U, V = solve_update(K, R, C[layer], lam)
            w = model.arch.mlp_down_weight(model.bridge, layer)
            backup[layer] = w.detach().clone()
            with torch.no_grad():
                w.add_((U @ V.T).to(w.dtype))
            updates[layer] = (U.float().cpu(), V.float().cpu())
        clock.lap("solve")
        # The fitted prompts as the edited model sees them (their bias before came free with
        # the targets' unedited run).
        from .forward import last_token_logprobs

        pair = Candidates.resolve(model).ids
        after = _pronoun_bias(last_token_logprobs(
            model, [p.input_ids for p in prompts], select=[pair["male"], pair["female"]],
            progress=False))
        clock.lap("measure")
    finally:
        with torch.no_grad():
            for layer, saved in backup.items():
                model.arch.mlp_down_weight(model.bridge, layer).copy_(saved)
    before = target_report.pop("bare_before")
    meta = {
        "method": "lsdm", "fingerprint": fingerprint, "model": model.name, "layers": layers,
        "lam": lam, "site": site, "seed": seed, "prefixes": prefixes, "n_prompts": len(prompts),
        "preserve": None if preserve is None else {
            "weight": preserve_weight, "subjects": preserve.subjects(), "n_prompts": len(preserve)},
        "prompts": [{"text": p.text, "subject": p.subject} for p in prompts],
        "subjects": v.subjects,
        "targets": target_report, "stats_tokens": stats_tokens,
        "fitted_prompts": {k: {"before": before[k], "after": after[k]} for k in before},
        "corpus": "neutral+samples" if corpus is None else "user",
        "seconds": clock.laps,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return Edit(updates, meta)
