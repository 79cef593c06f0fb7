"""Trace speed: TransformerLens's per-cell activation patching vs interp's batched engine.

Same model (the bundled SmolLM2-135M-Instruct), same prompts, same grid (residual stream, MLP
output and attention output at every layer and position), same metric (log p(she) − log p(he) at
the last token), in one process. Prints cells per second for both, their ratio, the largest
difference between their effects, and how well attribution patching ranks the exact effects.

    python benchmarks/trace_speed.py                 # swap corruption, then noise with 3 samples
    python benchmarks/trace_speed.py --samples 0     # swap only
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformer_lens import patching  # noqa: E402

import interp  # noqa: E402
from interp import prompts as P  # noqa: E402
from interp.locate.corruption import Noise, Swap  # noqa: E402
from interp.measure.metrics import Candidates  # noqa: E402

TL_KINDS = ("resid", "attn", "mlp")  # the order of get_act_patch_block_every's output


def tl_trace(model, prompts, corruption, candidates):
    """Per prompt: TransformerLens's block patching; returns {(prompt, kind, layer, pos): effect}."""
    bridge = model.bridge
    she, he = candidates.ids["female"], candidates.ids["male"]

    def metric(logits):
        return (logits[:, -1, she] - logits[:, -1, he]).mean()

    effects = {}
    for i, p in enumerate(prompts):
        ids = torch.tensor([p.input_ids])
        _, clean_cache = bridge.run_with_cache(ids)
        if isinstance(corruption, Swap):
            corrupted = torch.tensor([corruption.corrupt_ids(model, p)[0]])
        else:  # noise: TL patches on top of a persistent hook that swaps in noisy embeddings
            embeds = corruption(model, p, clean_cache["blocks.0.hook_resid_pre"][0], 0).embeds
            corrupted = ids.repeat(embeds.shape[0], 1)
            bridge.add_hook("blocks.0.hook_resid_pre", lambda act, hook, e=embeds: e.clone())
        try:
            with torch.no_grad():
                base = metric(bridge(corrupted)).item()
                grid = patching.get_act_patch_block_every(bridge, corrupted, clean_cache, metric)
        finally:
            bridge.reset_hooks()
        for k, kind in enumerate(TL_KINDS):
            for layer in range(grid.shape[1]):
                for pos in range(grid.shape[2]):
                    effects[(i, kind, layer, pos)] = grid[k, layer, pos].item() - base
    return effects


def ours(result):
    f = result.frame
    return {(int(r.prompt_id), r.kind, int(r.layer), int(r.position)): r.effect
            for r in f.itertuples()}


def spearman(a, b):
    return float(np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1])


def compare(model, prompts, corruption, label):
    candidates = Candidates.resolve(model)
    kinds = ("resid", "mlp", "attn")
    n_cells = sum(len(p.input_ids) for p in prompts) * len(kinds) * model.arch.n_layers

    start = time.perf_counter()
    tl = tl_trace(model, prompts, corruption, candidates)
    t_tl = time.perf_counter() - start

    start = time.perf_counter()
    exact = interp.trace(model, prompts, kinds=kinds, corruption=corruption, progress=False)
    t_ours = time.perf_counter() - start

    start = time.perf_counter()
    approx = interp.trace(model, prompts, kinds=kinds, corruption=corruption,
                          method="attribution", progress=False)
    t_attr = time.perf_counter() - start

    mine = ours(exact)
    diff = max(abs(mine[k] - v) for k, v in tl.items())
    live = exact.frame["effect"] != 0  # cells before the subject are exactly 0 in both
    rho = spearman(exact.frame.loc[live, "effect"], approx.frame.loc[live, "effect"])
    print(f"\n== {label}: {len(prompts)} prompts, {n_cells} cells "
          f"(resid, mlp, attn × {model.arch.n_layers} layers × every position)")
    print(f"TransformerLens per-cell patching : {n_cells / t_tl:8.1f} cells/s  ({t_tl:6.1f} s)")
    print(f"interp exact engine               : {n_cells / t_ours:8.1f} cells/s  ({t_ours:6.1f} s)")
    print(f"speed ratio                       : {t_tl / t_ours:8.1f} x")
    print(f"max |effect difference|           : {diff:.2e}")
    print(f"attribution patching              : {n_cells / t_attr:8.1f} cells/s; Spearman rank "
          f"correlation with exact effects {rho:.3f} (over {int(live.sum())} non-zero cells)")
    return {"corruption": label, "cells": n_cells, "tl_cells_per_s": n_cells / t_tl,
            "ours_cells_per_s": n_cells / t_ours, "ratio": t_tl / t_ours, "max_abs_diff": diff,
            "attribution_spearman": rho}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=8, help="number of prompts (default 8)")
    ap.add_argument("--samples", type=int, default=3,
                    help="noise samples for the noise comparison; 0 skips it (default 3)")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    model = interp.load_model()
    ps = P.professions(model, "train", templates=["The {} said that"])
    ps = ps.filter(lambda p: p.subject_span[1] - p.subject_span[0] == 1)[: args.prompts]
    print(f"model: {model!r}\nprompts: {[p.text for p in ps]}\ntorch threads: "
          f"{torch.get_num_threads()}")
    rows = [compare(model, ps, Swap(("person",)), "swap (subject -> 'person')")]
    if args.samples:
        rows.append(compare(model, ps, Noise(samples=args.samples),
                            f"noise (3 sigma, {args.samples} samples)"))
    print("\n" + pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
