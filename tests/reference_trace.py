"""A plain reference for causal tracing: one hooked forward per cell, written for clarity.

It shares nothing with the engine but the corruption objects (which define the inputs): full
forwards through the bridge, `run_with_cache` for clean activations, and hooks that overwrite
one site. The fast engine must equal it.
"""

import torch

from interp.locate.corruption import Swap
from interp.locate.spec import window_layers

HOOK = {"resid": "blocks.{}.hook_resid_pre", "mlp": "blocks.{}.hook_mlp_out",
        "attn": "blocks.{}.hook_attn_out", "head": "blocks.{}.attn.hook_z"}


def logodds(logits, c):
    return logits[:, -1, c.ids["female"]] - logits[:, -1, c.ids["male"]]


def _setter(clean, pos, head):
    def hook(act, hook):
        act = act.clone()
        if head is None:
            act[:, pos] = clean[0, pos]
        else:
            act[:, pos, head] = clean[0, pos, head]
        return act
    return hook


def each_cell(model, i, T, kinds, window, cells=None):
    """(key, the hook names it restores, position, head) of every cell of prompt i (T tokens)
    that `cells` (None: all) holds."""
    L = model.arch.n_layers
    for kind in kinds:
        heads = range(model.arch.n_heads) if kind == "head" else [None]
        for layer in range(L):
            a, b = (window_layers(layer, window, L) if kind in ("mlp", "attn")
                    else (layer, layer))
            names = [HOOK[kind].format(l) for l in range(a, b + 1)]
            for pos in range(T):
                for h in heads:
                    key = (i, kind, layer, pos, -1 if h is None else h)
                    if cells is None or key in cells:
                        yield key, names, pos, h


def reference_trace(model, prompts, corruption, candidates, *, kinds, window=1, seed=0,
                    cells=None, reverse=False):
    """{(prompt index, kind, layer, pos, head): patched metric averaged over samples}, plus
    clean and corrupted metrics per prompt. `reverse`: patch corrupted values into the clean run
    (the natural indirect effect of a swap)."""
    bridge = model.bridge
    out, clean_m, corrupt_m = {}, [], []
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids = torch.tensor([p.input_ids])
            clean_logits, clean_cache = bridge.run_with_cache(ids)
            if isinstance(corruption, Swap):
                corrupt_ids = torch.tensor([corruption.corrupt_ids(model, p)[0]])
                first_hooks = []
                run_ids = corrupt_ids
            else:
                embeds = clean_cache["blocks.0.hook_resid_pre"][0]
                corrupted = corruption(model, p, embeds, seed).embeds
                run_ids = ids.repeat(corrupted.shape[0], 1)
                first_hooks = [("blocks.0.hook_resid_pre", lambda act, hook, e=corrupted: e.clone())]
            if reverse:
                _, source_cache = bridge.run_with_cache(corrupt_ids)
                run_ids, first_hooks = ids, []
            else:
                source_cache = clean_cache
            with bridge.hooks(fwd_hooks=first_hooks):
                base = logodds(bridge(run_ids), candidates).double().mean().item()
            clean_m.append(logodds(clean_logits, candidates).item())
            corrupt_m.append(base)
            for key, names, pos, h in each_cell(model, i, len(p.input_ids), kinds, window, cells):
                hooks = first_hooks + [(n, _setter(source_cache[n], pos, h)) for n in names]
                with bridge.hooks(fwd_hooks=hooks):
                    logits = bridge(run_ids)
                out[key] = logodds(logits, candidates).double().mean().item()
    return out, clean_m, corrupt_m


def engine_cells(result):
    f = result.frame
    heads = f["head"].fillna(-1).astype(int)
    return {(int(r.prompt_id), r.kind, int(r.layer), int(r.position), int(h)): r.patched
            for r, h in zip(f.itertuples(), heads)}


def contrast_metric(model, prompt, logits_of_group, contrast):
    """Σ_g w_g log p(group g's form | prompt), each form scored by its own full forward."""
    weights = contrast.trace_weights(prompt.group, prompt.declared)
    return sum(weights[g] * logits_of_group(g) for g in contrast.group_names)


def reference_contrast_trace(model, prompts, corruption, contrast, *, kinds, window=1, seed=0,
                             cells=None):
    """Like `reference_trace` with a contrast's metric: every group's form is appended to the
    prompt and scored in a forward of its own (summed log-probabilities of its tokens)."""
    bridge, tok = model.bridge, model.tokenizer
    out, clean_m, corrupt_m = {}, [], []

    def score(ids, P, n_form, hooks):
        with bridge.hooks(fwd_hooks=hooks):
            logp = bridge(ids).double().log_softmax(-1)
        form = ids[:, P:]
        got = logp[:, P - 1: P - 1 + n_form].gather(-1, form.unsqueeze(-1)).squeeze(-1)
        return got.sum(-1).mean().item()

    with torch.no_grad():
        for i, p in enumerate(prompts):
            P = len(p.input_ids)
            forms = contrast.forms(p.slot)
            ids_of = {g: torch.tensor([list(p.input_ids) + tok(" " + f, add_special_tokens=False)
                                       ["input_ids"]]) for g, f in forms.items()}
            clean_caches, corrupted = {}, {}
            for g, ids in ids_of.items():
                _, clean_caches[g] = bridge.run_with_cache(ids)
                embeds = clean_caches[g]["blocks.0.hook_resid_pre"][0]
                corrupted[g] = corruption(model, p, embeds[:P], seed).embeds
            def first(g):
                n = ids_of[g].shape[1] - P
                e = torch.cat([corrupted[g], clean_caches[g]["blocks.0.hook_resid_pre"][0, P:]
                               .expand(corrupted[g].shape[0], n, -1)], dim=1)
                return [("blocks.0.hook_resid_pre", lambda act, hook, e=e: e.clone())]

            def run(hooks_of):
                return contrast_metric(model, p, lambda g: score(
                    ids_of[g].repeat(corrupted[g].shape[0], 1), P, ids_of[g].shape[1] - P,
                    first(g) + hooks_of(g)), contrast)

            clean_m.append(contrast_metric(model, p, lambda g: score(
                ids_of[g], P, ids_of[g].shape[1] - P, []), contrast))
            corrupt_m.append(run(lambda g: []))
            for key, names, pos, h in each_cell(model, i, P, kinds, window, cells):
                out[key] = run(lambda g, names=names, pos=pos, h=h: [
                    (n, _setter(clean_caches[g][n], pos, h)) for n in names])
    return out, clean_m, corrupt_m


def last_token_acts(model, prompts, hook):
    """Each prompt's activation at `hook` on its last token, read by a plain `run_with_cache`,
    one prompt at a time (float64 rows)."""
    rows = []
    for p in prompts:
        _, cache = model.bridge.run_with_cache(torch.tensor([list(p.input_ids)]),
                                               names_filter=hook)
        rows.append(cache[hook][0, -1].double())
    return torch.stack(rows)
