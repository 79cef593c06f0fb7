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

import datetime
import time
from collections.abc import Sequence

import torch

from ..locate.trace import trace
from ..common.errors import TemplateError
from ..measure.prompts import TEMPLATES, PromptSet, check_template, definitional
from ..model.forward import last_token_logprobs
from .edit import Edit, EditError, forward_order
from .keys import SITE_TOKEN, SubjectReader, check_site, generated_prefixes, versions
from .norms import pre_norm_change
from .solve import solve_update
from .stats import key_second_moments
from .targets import _pronoun_bias, optimise_targets, pronoun_columns

# The templates an edit is fitted on by default: three contexts before the subject (so its key
# is seen after "The" and after a clause) and continuations that lean he or she differently.
EDIT_TEMPLATES = ("The {} said that", "After the meeting, the {} said that",
                  "The {} smiled because")

# An edit at the last token learns from the continuation too, so it is fitted on every template
# (bundled model, test occupations: −73% |log-odds| and −0.3 pt definitional with all 18,
# against −68% and −1.4 pt with the first 12; those 12 carried over to the 6 unseen ones at −67%).
LAST_TOKEN_TEMPLATES = TEMPLATES


def last_token_sites(located, *, mlp_width: int = 6, n_attn: int = 2) -> tuple[list, list, str]:
    """Where a last-token edit goes, given a trace with MLP and attention cells: the top
    `mlp_width` MLP layers, and the `n_attn` attention layers among them with the strongest
    effect at the prompt's last token. Returns (MLP layers, attention layers, why).

    The top band rather than the trace's own MLP peak at the last token: on the bundled model
    the peak band (22–27, with attention 21 and 27) took 45% off the held-out sentence shapes'
    bias, the top band with its strongest attention (24–29, 26–27) 59% (docs/editing.md, measured with
    benchmarks/edit_sites.py)."""
    n = int(located.frame["layer"].max()) + 1
    mlp = list(range(max(0, n - mlp_width), n))
    profile = located.layer_profile("attn", "last token")
    attn = sorted(int(l) for l in profile[profile.index.isin(mlp)].nlargest(n_attn).index)
    why = ("the pronoun is predicted at the prompt's last token, where the top MLPs edit best, "
           "and these are the attention layers among them with the strongest effect there in "
           "the trace (" + ", ".join(f"{l}: {profile[l]:.3f}" for l in attn) + ")")
    return mlp, attn, why


def choose_sites(located, site: str = "last") -> tuple[list, list, str]:
    """The edit's sites from a trace: `last_token_sites` for site "last" (the trace needs MLP
    and attention cells), the trace's MLP band at the subject's last token for the paper's
    site "subject". Returns (MLP layers, attention layers, why)."""
    check_site(site)
    if site == "last":
        return last_token_sites(located)
    layers = located.suggest_layers("mlp", group=SITE_TOKEN[site])
    return layers, [], ("the paper's LSDM: the band of MLP layers with the strongest effect at "
                        "the subject's last token in the trace")


def _preserved(model, preserve, site: str, prompts: PromptSet | None = None):
    """`preserve` as a prompt set: "auto" is the train-split definitional words ("The king said
    that") for a last-token edit, whose keys they share, in the fitted prompts' templates (each
    with its pronoun slot); nothing for the paper's subject edit."""
    if isinstance(preserve, str):
        if preserve != "auto":
            raise EditError(f"preserve must be a PromptSet, None or 'auto', not {preserve!r}")
        if site != "last":
            return None
        slots = {p.template: p.slot for p in prompts or () if _is_template(p.template)}
        return definitional(model, split="train", templates=list(slots) or TEMPLATES,
                            slots=slots)
    return preserve


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


def lsdm(model, prompts: PromptSet, *, layers: Sequence[int] | None = None,
         attn_layers: Sequence[int] | None = None, lam: float = 3000.0,
         site: str = "last", preserve: PromptSet | str | None = "auto",
         preserve_weight: float = 0.1,
         n_prefixes: int | None = None, prefix_len: int = 8, iters: int = 6,
         clamp_norm: float = 1.5,
         tol: float = 0.1, strength: float = 1.0,
         stats_tokens: int = 20000, corpus=None, seed: int = 0, strict: bool = True,
         progress: bool | None = None) -> Edit:
    """Fit an LSDM edit that balances p(he) and p(she) on `prompts` (the model is left as it
    was; apply the returned `Edit` to change it). The defaults are the best recipe measured
    (docs/editing.md, benchmarks/mitigations.py); `site="subject"` is the paper's method.

    layers: MLP layers to edit, bottom first; None traces the prompts (MLP and attention) and
    takes `choose_sites`: for site "last", the top six MLPs and the two attention layers among
    them with the strongest effect at the last token. attn_layers: layers whose attention
    output projection to edit as well (its key: every head's output side by side, the
    projection's input), with the same statistics, targets and solve; None: the trace's choice
    when `layers` is None, else none; `layers=[]` edits attention only. lam: weight of the
    preservation statistics C.
    site: where the keys are read and the targets set: "last" (the prompt's last token, where
    the pronoun is predicted: one key per prompt; pair it with top layers and fit every
    template) or "subject" (the paper's LSDM: the subject's last token, one key per subject).
    preserve: prompts whose next-token prediction must stay as it is (e.g. definitional ones,
    "The king said that"): their keys join the solve with the unedited outputs as targets,
    weighted by preserve_weight; "auto" preserves the train-split definitional prompts for a
    last-token edit (in the fitted prompts' templates) and nothing for a subject edit.
    strength: how much of each occupation's own part of the balancing change to ask for (1: all
    of it; more reaches further into unseen occupations and costs definitional gender, see
    docs/editing.md). Each prompt is balanced on its own slot's pronouns (`Prompt.slot`: he/she,
    him/her or his/her; `interp.prompts.contexts` fits all three). n_prefixes: generated
    prefixes per prompt (None: 0 at the last token, where they doubled the fit time and did
    not help; 1 at the subject, as ROME). The rest tunes the prefixes, the target optimisation and the
    statistics corpus (see their functions)."""
    prompts.require_nonempty()
    check_site(site)  # before a trace, which would take minutes
    preserve = _preserved(model, preserve, site, prompts)
    if n_prefixes is None:
        n_prefixes = 0 if site == "last" else 1
    why = "given"
    if layers is None:
        kinds = ("mlp", "attn") if site == "last" else ("mlp",)
        located = trace(model, prompts.of_slot("subject")[:40], kinds=kinds, samples=3,
                        seed=seed, progress=progress)
        layers, chosen_attn, why = choose_sites(located, site)
        attn_layers = chosen_attn if attn_layers is None else attn_layers
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
    prefixes = generated_prefixes(model, n_prefixes, prefix_len, seed)
    v = versions(model, prompts, prefixes, site)
    preserved = None
    if preserve is not None:
        preserve.require_nonempty()
        preserved = versions(model, preserve, prefixes, site)
    clock.lap("prefixes")

    C = {(component, l): c for component, edited in (("mlp", layers), ("attn", attn_layers))
         for l, c in key_second_moments(model, edited, corpus=corpus, n_tokens=stats_tokens,
                                        seed=seed, component=component,
                                        progress=progress).items()}
    clock.lap("statistics")
    top = sites[-1][1]
    targets, target_report = optimise_targets(model, v, top, iters=iters, clamp_norm=clamp_norm,
                                              tol=tol, strict=strict, progress=progress)
    clock.lap("targets")
    key_name = {s: model.arch.key_hook(*s) for s in sites}
    out_name = model.arch.hook("resid_post", top)
    # Where a component's output is normed before the stream (Gemma 2/3, OLMo 2), the change it
    # must make in the stream is carried back through that norm to what the weight writes.
    norms = {s: model.arch.out_norm(model.bridge, *s) for s in sites}
    write_name = {s: model.arch.hook(f"{s[0]}_write", s[1]) for s in sites
                  if norms[s] is not None}
    updates, backup = {"mlp": {}, "attn": {}}, {}
    reader = SubjectReader(model, v)
    if preserved is not None:
        preserved_reader = SubjectReader(model, preserved)
        scale = preserve_weight ** 0.5
    try:
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
                if strength != 1.0:
                    targets = first_out + stronger(targets - first_out,
                                                   v.templates if site == "last" else None,
                                                   strength)
            K = cur[key].T
            R = wanted(cur, targets)
            if preserved is not None:
                more = preserved_reader.read(names, **resume)
                if i == 0:  # nothing is updated yet: these are the outputs to keep
                    preserved_targets = more[out_name]
                K = torch.cat([K, scale * more[key].T], 1)
                R = torch.cat([R, scale * wanted(more, preserved_targets)], 1)
            U, V = solve_update(K, R, C[component, layer], lam)
            w = model.arch.edit_weight(model.bridge, component, layer)
            backup[component, layer] = w.detach().clone()
            with torch.no_grad():
                w.add_((U @ V.T).to(w.dtype))
            updates[component][layer] = (U.float().cpu(), V.float().cpu())
        # How much of the change the targets ask for at the top edited layer the updates make:
        # the stream there now, from the stream the last pass kept.
        reached = reader.read([out_name], start=sites[-1][1], stop=top + 1)[out_name]
        clock.lap("solve")
        # The fitted prompts as the edited model sees them, up to `MEASURED` of them evenly
        # spaced (a forward over thousands of prompts would be a fifth of the fit); their bias
        # before came free with the targets' unedited run.
        measured = _evenly(len(prompts), MEASURED)
        ids, columns = pronoun_columns(model, [prompts[i].slot for i in measured])
        lp = last_token_logprobs(model, [prompts[i].input_ids for i in measured], select=ids,
                                 progress=False)
        after = _pronoun_bias(lp.gather(1, columns.to(lp.device)))
        clock.lap("measure")
    finally:
        with torch.no_grad():
            for (component, layer), saved in backup.items():
                model.arch.edit_weight(model.bridge, component, layer).copy_(saved)
    before = _pronoun_bias(target_report.pop("bare_unedited")[measured])
    asked, made = targets - first_out, reached - first_out
    size = asked.norm(dim=-1).clamp_min(1e-12)
    along = (made * asked).sum(-1) / size ** 2
    miss = (targets - reached).norm(dim=-1) / size
    meta = {
        "method": "lsdm", "fingerprint": fingerprint, "model": model.name, "layers": layers,
        "attn_layers": attn_layers, "sites_chosen": why, "lam": lam, "site": site,
        "strength": strength,
        "seed": seed, "n_prefixes": n_prefixes,
        "prefixes": prefixes, "n_prompts": len(prompts),
        "preserve": None if preserve is None else {
            "weight": preserve_weight, "subjects": preserve.subjects(), "n_prompts": len(preserve)},
        "prompts": [{"text": p.text, "subject": p.subject} for p in prompts],
        "subjects": v.subjects,
        "targets": target_report, "stats_tokens": stats_tokens,
        # How the stream at the top edited layer moved against the change the targets ask for
        # there, per fitted prompt, as a share of that change: "along" its direction (1 =
        # all of it made), and "miss" = |target − stream after| (0 = reached exactly; on a
        # real model the updates also move the stream in directions the targets leave free).
        "targets_reached": {"along": float(along.mean()), "miss": float(miss.mean()),
                            "miss_max": float(miss.max())},
        "fitted_prompts": {k: {"before": before[k], "after": after[k]} for k in before},
        "fitted_prompts_measured": len(measured),
        "corpus": "neutral+samples" if corpus is None else "user",
        "seconds": clock.laps,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return Edit(updates["mlp"], meta, attn=updates["attn"])
