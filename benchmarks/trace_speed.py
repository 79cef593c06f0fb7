"""Trace speed: TransformerLens's per-cell activation patching vs interp's exact engine, and the
engine against the floor of what the grid needs.

Same model, same prompts, same grid (residual stream, MLP output and attention output at every
layer and position), same metric (log p(she) − log p(he) at the last token), one process. Per
grid size and corruption it prints:

- cells per second of both and their ratio. TransformerLens patches prompt by prompt, so its
  per-cell rate is measured on the first --tl-prompts prompts and holds for any grid size; the
  largest difference between the two is taken over those prompts' cells.
- the floor: block-tokens (one block over one token) the grid needs at least (each run from the
  block its patch starts at and the position it patches on, plus the clean and corrupted runs),
  against what the engine executed, and the engine's FLOP/s against a plain batched forward's
  on this machine (FLOPs: 2 × a block's weights + attention over the context, per block-token).
- how well attribution patching ranks the exact effects (Spearman, non-zero cells).

Then heads (kind="head") and MLP/attention windows of 5 and 10 layers, engine only. "setup" is
what a trace call does before its first forward (the weights' fingerprint for the spec, the
pronoun candidates, corrupting the inputs, the grid).

    python benchmarks/trace_speed.py                        # bundled model, 1, 2, 8, 32 prompts
    python benchmarks/trace_speed.py --prompts 2 --samples 0
    python benchmarks/trace_speed.py --random-config llama-1b --prompts 1   # Llama-3.2-1B's shape
    python benchmarks/trace_speed.py --random-config gemma3-1b --prompts 1  # Gemma-3-1B's shape
    python benchmarks/trace_speed.py --model gemma-3-270m                   # the second real model
    python benchmarks/trace_speed.py --random-config llama-1b --device cuda --dtype bfloat16 \\
        --prompts 8 --tokens 16
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's patching bars

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformer_lens import patching  # noqa: E402

import interp  # noqa: E402
from interp import prompts as P  # noqa: E402
from interp.locate.corruption import Noise, Swap  # noqa: E402
from interp.measure.metrics import Candidates  # noqa: E402
from interp.model.runner import Runner  # noqa: E402
from interp.model.tiny import LARGE, large_model  # noqa: E402

TL_KINDS = ("resid", "attn", "mlp")  # the order of get_act_patch_block_every's output
KINDS = ("resid", "mlp", "attn")

RANDOM_CONFIGS = LARGE  # Llama-3.2-1B's and Gemma-3-1B's shapes, random weights


def random_model(name: str, device, dtype):
    from interp.model.load import bundled_tokenizer, wrap

    tok = bundled_tokenizer()
    hf = large_model(name, tok, dtype)
    return wrap(hf, tok, name=f"random-{name}", source={"kind": "random", "config": name},
                device=device, dtype=dtype)


def block_flops(arch, context: float) -> float:
    """FLOPs of one block over one token: 2 × its weights, plus attention scores and mixing."""
    d_head = arch.d_model // arch.n_heads
    attn = arch.d_model * d_head * (2 * arch.n_heads + 2 * arch.n_kv_heads)
    mlp = (3 if arch.gated_mlp else 2) * arch.d_model * arch.d_mlp
    return 2 * (attn + mlp) + 4 * arch.n_heads * d_head * context


def sync(model):
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def plain_forward_flops(model, prompts, rows: int = 256) -> float:
    """FLOP/s of a plain batched forward through every block (best of 3)."""
    runner = Runner(model)
    ids = torch.tensor([prompts[i % len(prompts)].input_ids for i in range(rows)],
                       device=model.device)
    x = runner.embed(ids)
    best = float("inf")
    for _ in range(3):
        sync(model)
        t = time.perf_counter()
        runner.final_hidden(x, 0)
        sync(model)
        best = min(best, time.perf_counter() - t)
    T = ids.shape[1]
    return rows * T * model.arch.n_layers * block_flops(model.arch, (T + 1) / 2) / best


def tl_trace(model, prompts, corruption, candidates):
    """Per prompt: TransformerLens's block patching: {(prompt, kind, layer, pos): effect}."""
    bridge = model.bridge
    she, he = candidates.ids["female"], candidates.ids["male"]

    def metric(logits):
        return (logits[:, -1, she] - logits[:, -1, he]).float().mean()

    effects = {}
    for i, p in enumerate(prompts):
        ids = torch.tensor([p.input_ids], device=model.device)
        _, clean_cache = bridge.run_with_cache(ids)
        if isinstance(corruption, Swap):
            corrupted = torch.tensor([corruption.corrupt_ids(model, p)[0]], device=model.device)
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


def spearman(a, b):
    return float(np.corrcoef(pd.Series(a).rank(), pd.Series(b).rank())[0, 1])


def timed_trace(model, prompts, repeat: int = 1, **kw):
    """The trace and its best time over `repeat` runs (small grids vary from run to run)."""
    best = float("inf")
    for _ in range(repeat):
        sync(model)
        if model.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        result = interp.trace(model, prompts, progress=False, **kw)
        sync(model)
        best = min(best, time.perf_counter() - t)
    return result, best


def peak_memory(model) -> str:
    if model.device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (GPU)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process)"


def engine_row(model, prompts, label, plain, kinds=KINDS, **kw):
    result, seconds = timed_trace(model, prompts, repeat=3 if len(prompts) <= 8 else 1,
                                  kinds=kinds, **kw)
    cells = len(result.frame)
    cost = result.cost
    context = float(np.mean([len(p.input_ids) for p in prompts]))
    flops = cost["executed_block_tokens"] * block_flops(model.arch, context)
    row = {"grid": label, "prompts": len(prompts), "cells": cells, "engine_s": seconds,
           "engine_cells_per_s": cells / seconds,
           "executed_over_floor": cost["executed_block_tokens"] / cost["floor_block_tokens"],
           "engine_flops_over_plain": flops / seconds / plain,
           "setup_share": cost["setup_s"] / cost["total_s"], "peak_memory": peak_memory(model)}
    return result, row


def compare(model, prompts, corruption, label, tl_rate, tl_effects, plain):
    exact, row = engine_row(model, prompts, label, plain, corruption=corruption)
    approx = interp.trace(model, prompts, kinds=KINDS, corruption=corruption,
                          method="attribution", progress=False)
    mine = {(int(r.prompt_id), r.kind, int(r.layer), int(r.position)): r.effect
            for r in exact.frame.itertuples()}
    shared = [k for k in tl_effects if k in mine]
    live = exact.frame["effect"] != 0  # cells before the subject are exactly 0 in both
    row.update({
        "tl_cells_per_s": tl_rate, "ratio_vs_tl": row["engine_cells_per_s"] / tl_rate,
        "max_abs_diff": max(abs(mine[k] - tl_effects[k]) for k in shared),
        "attribution_spearman": spearman(exact.frame.loc[live, "effect"],
                                         approx.frame.loc[live, "effect"])})
    print(f"{label:>28} {len(prompts):3d} prompts {row['cells']:6d} cells: "
          f"{row['engine_s']:7.2f} s, {row['ratio_vs_tl']:6.1f}x TL, "
          f"executed/floor {row['executed_over_floor']:.2f}, "
          f"FLOP/s {row['engine_flops_over_plain']:.2f} of a plain forward, "
          f"max |diff| {row['max_abs_diff']:.1e}, attribution rho "
          f"{row['attribution_spearman']:.3f}, setup {100 * row['setup_share']:.0f}% of the "
          f"call, peak {row['peak_memory']}", flush=True)
    return row


def prompt_set(model, n: int, tokens: int | None):
    """n prompts of one length with one-token subjects: "The {} said that" (5 tokens), or with
    `tokens`, a template of about that many tokens (the 1B grid on a GPU uses 16)."""
    template = "The {} said that"
    if tokens:
        words = "After a long day at work in the busy city center of the town".split()
        template = " ".join(words[: max(1, tokens - 5)]) + ", the {} said that"
    ps = P.professions(model, "train", templates=[template])
    ps = ps.filter(lambda p: p.subject_span[1] - p.subject_span[0] == 1)
    common = pd.Series([len(p.input_ids) for p in ps]).mode()[0]
    return ps.filter(lambda p: len(p.input_ids) == common)[:n]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", default="1,2,8,32", help="grid sizes (default 1,2,8,32)")
    ap.add_argument("--samples", type=int, default=3,
                    help="noise samples for the noise comparison; 0 skips it (default 3)")
    ap.add_argument("--tl-prompts", type=int, default=2,
                    help="prompts TransformerLens's per-cell rate is measured on (default 2)")
    ap.add_argument("--extras", type=int, default=2,
                    help="prompts for the head and window grids; 0 skips them (default 2)")
    ap.add_argument("--random-config", choices=sorted(RANDOM_CONFIGS), default=None)
    ap.add_argument("--model", default=None, help="a model spec (default: the bundled model)")
    ap.add_argument("--tokens", type=int, default=None, help="prompt length (longer template)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.random_config:
        model = random_model(args.random_config, device, dtype)
    else:
        model = interp.load_model(args.model, device=device, dtype=dtype)
    sizes = [int(x) for x in args.prompts.split(",")]
    ps = prompt_set(model, max(sizes + [args.tl_prompts]), args.tokens)
    print(f"model: {model!r}\nprompts: {len(ps[0].input_ids)} tokens, e.g. {ps[0].text!r}\n"
          f"torch threads: {torch.get_num_threads()}, device {device}, {args.dtype}")
    plain = plain_forward_flops(model, ps)
    print(f"plain batched forward: {plain / 1e9:.1f} GFLOP/s")
    interp.trace(model, ps[:1], kinds=KINDS, corruption="swap", progress=False)  # warm-up

    candidates = Candidates.resolve(model)
    corruptions = [(Swap(("person",)), "swap")]
    if args.samples:
        corruptions.append((Noise(samples=args.samples), f"noise ({args.samples} samples)"))
    rows = []
    for corruption, label in corruptions:
        sub = ps[: args.tl_prompts]
        sync(model)
        t = time.perf_counter()
        tl = tl_trace(model, sub, corruption, candidates)
        sync(model)
        tl_rate = len(tl) / (time.perf_counter() - t)
        print(f"\n== {label}: TransformerLens get_act_patch_block_every on {len(sub)} prompts: "
              f"{tl_rate:.1f} cells/s")
        for n in sizes:
            rows.append(compare(model, ps[:n], corruption, label, tl_rate, tl, plain))
    if args.extras:
        print("\n== heads and windows (engine only, swap)")
        sub = ps[: args.extras]
        for label, kw in [("heads", {"kinds": ("head",)}),
                          ("window 5", {"kinds": ("mlp", "attn"), "window": 5}),
                          ("window 10", {"kinds": ("mlp", "attn"), "window": 10})]:
            _, row = engine_row(model, sub, label, plain, corruption=Swap(("person",)), **kw)
            rows.append(row)
            print(f"{label:>28} {len(sub):3d} prompts {row['cells']:6d} cells: "
                  f"{row['engine_s']:7.2f} s, executed/floor {row['executed_over_floor']:.2f}, "
                  f"FLOP/s {row['engine_flops_over_plain']:.2f} of a plain forward, "
                  f"peak {row['peak_memory']}", flush=True)
    print("\n" + pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
