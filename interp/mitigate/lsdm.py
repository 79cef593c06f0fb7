"""LSDM: a least-squares (MEMIT-style) closed-form edit of the located MLP (and attention
output) weights.

For each edit prompt, a key k (the input of the edited output map at the edited token) and a
target v* (the residual stream after the last edited layer there, optimised so that p(he) =
p(she)). Each edited weight, bottom first, solves

    ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹,   R = (V* − current outputs) / (weights left)

in float64, with C = E[k kᵀ] over neutral text protecting everything else the weight does.

The default reads keys and sets targets at the prompt's last token (one per prompt), in the
top MLPs and the attention layers among them that a trace finds strongest there, with the
definitional prompts preserved: there the edit sees the whole prompt, so it reaches occupations
and sentence shapes it was not fitted on far better (docs/editing.md, benchmarks/edit_sites.py).
site="subject" is the paper's LSDM: keys at the subject's last token, averaged over a few
generated prefixes and the bare prompt, in the bottom MLPs.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import torch

from ..common.errors import TemplateError
from ..measure.contrast import contrast as contrast_of
from ..measure.contrast import other_than_gender
from ..measure.prompts import TEMPLATES, PromptSet, check_template, definitional
from ..model.forward import last_token_logprobs
from .edit import Edit, EditError, forward_order
from .keys import SubjectReader, Versions, check_site, generated_prefixes, versions
from .lean import ContrastLean, contrast_logprobs, lean_measures, prompts_to_fit
from .norms import pre_norm_change
from .settings import FOLLOW_DECLARED, FOLLOW_MARGIN, KEEP_DECLARED, Settings
from .sites import find_sites
from .solve import solve_update
from .stats import key_second_moments
from .targets import optimise_targets, pronoun_bias, pronoun_columns

# The templates an edit is fitted on by default: three contexts before the subject (so its key
# is seen after "The" and after a clause) and continuations that lean he or she differently.
EDIT_TEMPLATES = ("The {} said that", "After the meeting, the {} said that",
                  "The {} smiled because")

# An edit at the last token learns from the continuation too, so it is fitted on every template
# (fewer templates took less off the test occupations and cost more definitional gender:
# docs/editing.md).
LAST_TOKEN_TEMPLATES = TEMPLATES


def preserved_prompts(model, preserve, site: str, prompts: PromptSet | None = None,
                      keep_declared: bool = False):
    """`preserve` as a prompt set: "auto" is the train-split definitional words ("The king said
    that") for a last-token edit, whose keys they share, in the fitted prompts' templates (each
    with its pronoun slot), and with `keep_declared` the `declared_prompts` too; nothing for
    the paper's subject edit."""
    if isinstance(preserve, str):
        if preserve != "auto":
            raise EditError(f"preserve must be a PromptSet, None or 'auto', not {preserve!r}")
        if site != "last":
            return None
        slots = {p.template: p.slot for p in prompts or () if _is_template(p.template)}
        return kept_prompts(model, definitional(model, split="train",
                                                templates=list(slots) or TEMPLATES,
                                                slots=slots), keep_declared)
    return preserve


# The pronoun families a gender edit keeps for a person who declared them.
KEPT_DECLARED = ("he", "she")


def declared_prompts(model) -> PromptSet:
    """The train prompts of the `misgendering` contrast that declare he or she ("Alex's
    pronouns are she/her. Alex came home late, and"): a gender edit must not change what the
    model predicts after them (a person's declared pronoun is not a stereotype to balance)."""
    return declared_contrast().prompts(model, "train").filter(
        lambda p: p.declared in KEPT_DECLARED)


def declared_contrast():
    """The contrast whose prompts declare a person's pronouns (`declared_prompts`)."""
    return contrast_of("misgendering")


def kept_prompts(model, definitional_prompts: PromptSet, keep_declared: bool) -> PromptSet:
    """The definitional prompts an edit keeps, and with `keep_declared` the
    `declared_prompts` after them."""
    if not keep_declared:
        return definitional_prompts
    return PromptSet([*definitional_prompts, *declared_prompts(model)],
                     name="definitional+declared")


def _is_template(text: str | None) -> bool:
    """Whether a prompt's `template` is one `from_templates` can fill (records may carry any)."""
    try:
        check_template(text or "")
    except TemplateError:
        return False
    return True


MEASURED = 512


def stronger(change: torch.Tensor, templates, strength: float) -> torch.Tensor:
    """The change the targets ask for with its occupation-specific part scaled by `strength`.

    A prompt's change is its template's mean change (what every occupation in that context
    needs: the context's own lean, which an edit carries over to unseen occupations almost
    whole) plus the rest (what this occupation needs: its stereotype, which a ridge solve
    carries over to unseen keys only in part). Asking for `strength` × the rest makes the part
    that carries over closer to all of it. templates: each row's template (None: scaled whole;
    no list: every row scaled whole)."""
    out = strength * change
    if not templates:
        return out
    groups: dict = {}
    for i, t in enumerate(templates):
        if t is not None:
            groups.setdefault(t, []).append(i)
    for rows in groups.values():
        idx = torch.tensor(rows, device=change.device)
        mean = change[idx].mean(0, keepdim=True)
        out[idx] = mean + strength * (change[idx] - mean)
    return out


def _evenly(n: int, most: int) -> list[int]:
    """Up to `most` indices spread evenly over range(n), all of them when n ≤ most."""
    if n <= most:
        return list(range(n))
    return sorted({round(i * (n - 1) / (most - 1)) for i in range(most)})


class _Clock:
    """Seconds spent per phase, kept in the edit's provenance (the speed benchmark reads them)."""

    def __init__(self):
        self.laps, self._t = {}, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 2)
        self._t = now


@dataclasses.dataclass(frozen=True)
class LSDMSettings(Settings):
    """LSDM's settings, each default defined here once (the best recipe measured:
    docs/editing.md, benchmarks/mitigations.py). `lsdm(..., name=value)` overrides one.

    lam: weight of the preservation statistics C. site: where the keys are read and the targets
    set: "last" (the prompt's last token, where the pronoun is predicted: one key per prompt;
    pair it with top layers and fit every template) or "subject" (the paper's LSDM: the
    subject's last token, one key per subject). preserve_weight: weight of the preserved
    prompts' keys. n_prefixes: generated prefixes per prompt (None: 0 at the last token, where
    they did not help, 1 at the subject, as ROME); prefix_len: their length in tokens.
    iters, clamp_norm, tol: the target optimisation (`optimise_targets`). strength: how much of
    each occupation's own part of the balancing change to ask for (1: all of it; more reaches
    further into unseen occupations and costs definitional gender: `stronger`). stats_tokens:
    tokens of neutral text behind the key statistics. follow_margin: for a contrast whose goal
    is "follow", the declared group's log-odds against the others that the targets ask for at
    least (`interp.mitigate.lean`). keep_declared: with preserve="auto", also keep the
    prediction after a person who declared he or she (`declared_prompts`), weighted by
    declared_weight (None: preserve_weight, as the definitional words). follow_declared:
    a he/she edit at the last token also fits the `declared_prompts`, with targets that make
    the declared pronoun the likeliest by follow_margin (the `misgendering` contrast's goal),
    so balancing he/she where nothing decides does not override a stated pronoun."""

    lam: float = 3000.0
    site: str = "last"
    preserve_weight: float = 0.1
    n_prefixes: int | None = None
    prefix_len: int = 8
    iters: int = 6
    clamp_norm: float = 1.5
    tol: float = 0.1
    strength: float = 1.0
    stats_tokens: int = 20000
    follow_margin: float = FOLLOW_MARGIN
    keep_declared: bool = KEEP_DECLARED
    follow_declared: bool = FOLLOW_DECLARED
    declared_weight: float | None = None
    label: ClassVar[str] = "LSDM setting"

    @property
    def prefixes(self) -> int:
        """Generated prefixes per prompt, with None resolved by the site."""
        if self.n_prefixes is not None:
            return self.n_prefixes
        return 0 if self.site == "last" else 1


class Fitted(NamedTuple):
    """What the solve made: per component {layer: (U, V)} with ΔW = U Vᵀ, the targets it
    solved for (after `strength`), the stream at the top edited layer before and after."""

    updates: dict
    targets: torch.Tensor
    first_out: torch.Tensor
    reached: torch.Tensor


def fit_versions(model, prompts: PromptSet, preserve: PromptSet | None, settings: LSDMSettings,
                 seed: int = 0) -> tuple[list[str], Versions, Versions | None]:
    """Phase 1: the generated prefixes, and every fitted (and preserved) prompt bare and behind
    each, with the token its key is read at."""
    prefixes = generated_prefixes(model, settings.prefixes, settings.prefix_len, seed)
    v = versions(model, prompts, prefixes, settings.site)
    preserved = None
    if preserve is not None:
        preserve.require_nonempty()
        preserved = versions(model, preserve, prefixes, settings.site)
    return prefixes, v, preserved


def statistics(model, mlp_layers: Sequence[int], attn_layers: Sequence[int],
               settings: LSDMSettings, *, corpus=None, seed: int = 0,
               progress: bool | None = None) -> dict:
    """Phase 2: C = E[k kᵀ] over neutral text for every edited site, {(component, layer): C}."""
    return {(component, l): c for component, edited in (("mlp", mlp_layers), ("attn", attn_layers))
            for l, c in key_second_moments(model, edited, corpus=corpus,
                                           n_tokens=settings.stats_tokens, seed=seed,
                                           component=component, progress=progress).items()}


def preserve_scale(preserved: Versions, s: LSDMSettings, device) -> float | torch.Tensor:
    """√weight of each preserved version's row: preserve_weight, or for the kept declared
    prompts (those with a declared group) declared_weight where it is set."""
    if s.declared_weight is None:
        return s.preserve_weight ** 0.5
    return torch.tensor([(s.preserve_weight if d is None else s.declared_weight) ** 0.5
                         for d in preserved.declared], device=device)


def solve(model, sites: Sequence[tuple[str, int]], v: Versions, preserved: Versions | None,
          targets: torch.Tensor, C: dict, settings: LSDMSettings, backup: dict,
          followed: tuple[Versions, torch.Tensor] | None = None) -> Fitted:
    """Phase 4: each site's update, bottom first, applied to the model as it is solved (each
    weight's original saved in `backup`, which the caller restores): the keys of a site are
    read on the model the sites below it already changed.

    Each site solves ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹ for its share of what is left of (targets −
    stream) at the top edited layer; preserved prompts join with the unedited stream as their
    targets, weighted by √preserve_weight (`preserve_scale`); `followed` (versions, their
    targets) join as fitted prompts of their own goal."""
    top = sites[-1][1]
    key_name = {s: model.arch.key_hook(*s) for s in sites}
    out_name = model.arch.hook("resid_post", top)
    # Where a component's output is normed before the stream (Gemma 2/3, OLMo 2), the change it
    # must make in the stream is carried back through that norm to what the weight writes.
    norms = {s: model.arch.out_norm(model.bridge, *s) for s in sites}
    write_name = {s: model.arch.hook(f"{s[0]}_write", s[1]) for s in sites
                  if norms[s] is not None}
    updates = {"mlp": {}, "attn": {}}
    reader = SubjectReader(model, v)
    if preserved is not None:
        preserved_reader = SubjectReader(model, preserved)
        scale = preserve_scale(preserved, settings, model.device)
    if followed is not None:
        followed_reader = SubjectReader(model, followed[0])
    for i, (component, layer) in enumerate(sites):
        # Updates below `layer` change the stream entering it; the stream entering the
        # layer updated last is as the previous pass kept it.
        resume = {"start": sites[i - 1][1] if i else 0, "stop": top + 1, "keep": layer}
        key = key_name[component, layer]
        names = [key, out_name, *([write_name[component, layer]]
                                  if (component, layer) in write_name else [])]

        def wanted(read, goal):
            """The change of what the weight writes that moves the stream by this site's
            share of (goal − now), through the site's output norm where it has one."""
            r = (goal - read[out_name]).T / (len(sites) - i)
            norm = norms[component, layer]
            return r if norm is None else pre_norm_change(
                norm, read[write_name[component, layer]].T, r)

        cur = reader.read(names, **resume)
        if i == 0:
            first_out = cur[out_name]
            if settings.strength != 1.0:
                targets = first_out + stronger(targets - first_out,
                                               v.templates if settings.site == "last" else None,
                                               settings.strength)
        K = cur[key].T
        R = wanted(cur, targets)
        if preserved is not None:
            more = preserved_reader.read(names, **resume)
            if i == 0:  # nothing is updated yet: these are the outputs to keep
                preserved_targets = more[out_name]
            K = torch.cat([K, scale * more[key].T], 1)
            R = torch.cat([R, scale * wanted(more, preserved_targets)], 1)
        if followed is not None:
            more = followed_reader.read(names, **resume)
            K = torch.cat([K, more[key].T], 1)
            R = torch.cat([R, wanted(more, followed[1])], 1)
        U, V = solve_update(K, R, C[component, layer], settings.lam)
        w = model.arch.edit_weight(model.bridge, component, layer)
        backup[component, layer] = w.detach().clone()
        with torch.no_grad():
            w.add_((U @ V.T).to(w.dtype))
        updates[component][layer] = (U.float().cpu(), V.float().cpu())
    # How much of the change the targets ask for at the top edited layer the updates make:
    # the stream there now, from the stream the last pass kept.
    reached = reader.read([out_name], start=sites[-1][1], stop=top + 1)[out_name]
    return Fitted(updates, targets, first_out, reached)


def followed_targets(model, prefixes, layer: int, s: LSDMSettings, progress: bool | None):
    """The `declared_prompts`' versions, targets at block `layer` that make each declared
    pronoun the likeliest by `s.follow_margin` (`ContrastLean` on the misgendering contrast),
    and the targets' report. These targets are a side condition of the he/she edit: how far
    they got is reported, not required."""
    declared = declared_prompts(model)
    dv = versions(model, declared, prefixes, s.site)
    objective = ContrastLean(model, dv, layer, declared_contrast(), s.follow_margin)
    targets, report = optimise_targets(model, dv, layer, iters=s.iters,
                                       clamp_norm=s.clamp_norm, tol=s.tol, strict=False,
                                       progress=progress, objective=objective)
    return dv, targets, report


def restore(model, backup: dict) -> None:
    """Put back the weights `solve` saved."""
    with torch.no_grad():
        for (component, layer), saved in backup.items():
            model.arch.edit_weight(model.bridge, component, layer).copy_(saved)


def measure_fitted(model, prompts: PromptSet, contrast=None) -> tuple[list[int], dict]:
    """Phase 5: the fitted prompts' bias as the model now sees them (call it with the updates
    applied), on up to `MEASURED` of them evenly spaced (a forward over thousands of prompts
    would be a fifth of the fit). Returns (the measured prompts' indices, `pronoun_bias`, or
    for a contrast `lean_measures`)."""
    measured = _evenly(len(prompts), MEASURED)
    if contrast is not None:
        chosen = [prompts[i] for i in measured]
        return measured, lean_measures(contrast, contrast_logprobs(model, contrast, chosen),
                                       chosen)
    ids, columns = pronoun_columns(model, [prompts[i].slot for i in measured])
    lp = last_token_logprobs(model, [prompts[i].input_ids for i in measured], select=ids,
                             progress=False)
    return measured, pronoun_bias(lp.gather(1, columns.to(lp.device)))


def reach(fitted: Fitted) -> dict:
    """How the stream at the top edited layer moved against the change the targets ask for
    there, per fitted prompt, as a share of that change: "along" its direction (1 = all of it
    made), and "miss" = |target − stream after| (0 = reached exactly; on a real model the
    updates also move the stream in directions the targets leave free)."""
    asked, made = fitted.targets - fitted.first_out, fitted.reached - fitted.first_out
    size = asked.norm(dim=-1).clamp_min(1e-12)
    along = (made * asked).sum(-1) / size ** 2
    miss = (fitted.targets - fitted.reached).norm(dim=-1) / size
    return {"along": float(along.mean()), "miss": float(miss.mean()),
            "miss_max": float(miss.max())}


def lsdm(model, prompts: PromptSet | None = None, *, contrast=None,
         layers: Sequence[int] | None = None,
         attn_layers: Sequence[int] | None = None, preserve: PromptSet | str | None = "auto",
         corpus=None, seed: int = 0, strict: bool = True, progress: bool | None = None,
         settings: LSDMSettings | None = None, **changes) -> Edit:
    """Fit an LSDM edit that balances each prompt's pronoun pair on `prompts` (the model is left
    as it was; apply the returned `Edit` to change it). Settings: `LSDMSettings`, whose defaults
    are the best recipe measured, with any of its fields given by name (lam=300.0,
    site="subject", strength=2.0, ...); `site="subject"` is the paper's method.

    layers: MLP layers to edit, bottom first; None traces the prompts and takes the sites
    `interp.mitigate.sites.locate_sites` reads from the trace. attn_layers: layers whose
    attention output projection to edit as well (its key: every head's output side by side, the
    projection's input), with the same statistics, targets and solve; None: the trace's choice
    when `layers` is None, else none; `layers=[]` edits attention only.
    preserve: prompts whose next-token prediction must stay as it is (e.g. definitional ones,
    "The king said that"): their keys join the solve with the unedited outputs as targets,
    weighted by preserve_weight; "auto" preserves the train-split definitional prompts for a
    last-token edit (in the fitted prompts' templates) and nothing for a subject edit. Each
    prompt is balanced on its own slot's pronouns (`Prompt.slot`: he/she, him/her or his/her;
    `interp.prompts.contexts` fits all three). corpus: the statistics' text (None: the bundled
    neutral text topped up with the model's own samples).

    The fit runs as its phases, each a function of this module: `fit_versions` (prefixes and
    keys' tokens), `statistics`, `optimise_targets`, `solve`, `measure_fitted`.

    contrast: another bias than he/she (a `Contrast`, a built-in's name or a file): the targets
    balance its groups or follow the declared one (`interp.mitigate.lean.ContrastLean`), the
    sites come from a trace of its lean, prompts default to its train prompts and "auto"
    preserves nothing. The gender contrast is the default he/she edit."""
    s = (settings or LSDMSettings()).with_(**changes)
    contrast = other_than_gender(contrast)
    prompts = prompts_to_fit(model, prompts, contrast, "lsdm")
    prompts.require_nonempty()
    check_site(s.site)  # before a trace, which would take minutes
    if contrast is not None:
        contrast.check_vocabulary(model.tokenizer)
        preserve = None if isinstance(preserve, str) and preserve == "auto" else preserve
    preserve = preserved_prompts(model, preserve, s.site, prompts, s.keep_declared)
    why = "given"
    if layers is None:
        found, _ = find_sites(model, prompts, s.site, seed=seed, progress=progress,
                              contrast=contrast)
        layers, why = found.mlp, found.why
        attn_layers = found.attn if attn_layers is None else attn_layers
    layers = sorted(set(int(l) for l in layers))
    attn_layers = sorted(set(int(l) for l in attn_layers or ()))
    if not layers and not attn_layers:
        raise EditError("no layers to edit: pass e.g. layers=[0, 1, 2] (MLP) or attn_layers=[27]")
    for l in (*layers, *attn_layers):
        if not 0 <= l < model.arch.n_layers:
            raise EditError(f"layer {l} is outside the model: it has layers "
                            f"0..{model.arch.n_layers - 1}")
    sites = forward_order(layers, attn_layers)
    clock = _Clock()
    fingerprint = model.fingerprint()
    prefixes, v, preserved = fit_versions(model, prompts, preserve, s, seed)
    clock.lap("prefixes")
    C = statistics(model, layers, attn_layers, s, corpus=corpus, seed=seed, progress=progress)
    clock.lap("statistics")
    objective = (None if contrast is None else
                 ContrastLean(model, v, sites[-1][1], contrast, s.follow_margin))
    targets, target_report = optimise_targets(model, v, sites[-1][1], iters=s.iters,
                                              clamp_norm=s.clamp_norm, tol=s.tol,
                                              strict=strict, progress=progress,
                                              objective=objective)
    clock.lap("targets")
    unedited = target_report.pop("bare_unedited")
    followed = None
    if contrast is None and s.follow_declared and s.site == "last":
        followed = followed_targets(model, prefixes, sites[-1][1], s, progress)
        target_report["declared"] = {k: val for k, val in followed[2].items()
                                     if k not in ("bare_unedited", "history")}
        clock.lap("declared targets")
    if contrast is not None:
        before = measure_fitted(model, prompts, contrast)[1]
    backup: dict = {}
    try:
        fitted = solve(model, sites, v, preserved, targets, C, s, backup, followed and
                       followed[:2])
        clock.lap("solve")
        measured, after = measure_fitted(model, prompts, contrast)
        clock.lap("measure")
    finally:
        restore(model, backup)
    if contrast is None:
        # the fitted prompts' bias before came free with the targets' unedited run
        before = pronoun_bias(unedited[measured])
    meta = {
        "method": "lsdm", "fingerprint": fingerprint, "model": model.name, "layers": layers,
        "attn_layers": attn_layers, "sites_chosen": why, "lam": s.lam, "site": s.site,
        "strength": s.strength,
        **({} if contrast is None else {"contrast": contrast.name,
                                        "follow_margin": s.follow_margin}),
        "seed": seed, "n_prefixes": s.prefixes,
        "prefixes": prefixes, "n_prompts": len(prompts),
        **({} if followed is None else {"follow_declared": {
            "n_prompts": len(set(followed[0].prompt)), "follow_margin": s.follow_margin}}),
        "preserve": None if preserve is None else {
            "weight": s.preserve_weight, "subjects": preserve.subjects(),
            "n_prompts": len(preserve),
            **({} if s.declared_weight is None else {"declared_weight": s.declared_weight})},
        "prompts": [{"text": p.text, "subject": p.subject} for p in prompts],
        "subjects": v.subjects,
        "targets": target_report, "stats_tokens": s.stats_tokens,
        "targets_reached": reach(fitted),
        "fitted_prompts": {k: {"before": before[k], "after": after[k]} for k in before},
        "fitted_prompts_measured": len(measured),
        "corpus": "neutral+samples" if corpus is None else "user",
        "seconds": clock.laps,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return Edit(fitted.updates["mlp"], meta, attn=fitted.updates["attn"])
