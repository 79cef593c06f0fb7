"""Models at the size researchers study: random weights in the shapes of Llama-3.2-1B and
Gemma-3-1B (`interp.model.tiny.LARGE`), in float32 and bfloat16, on this machine's CPU or a GPU.

For each shape and precision it runs a trace (residual stream, MLP, attention; one prompt, swap
corruption) and an LSDM edit of two MLPs and one attention layer (a few prompts, a small
statistics corpus: this checks that the path runs, not the edit's quality), and measures the
memory one more row of a batch costs in a forward that keeps its keys and values (what the
trace engine and the editor run): the peak's growth from 1 to 4 to 16 rows, against the
per-token estimate `token_budget` sizes GPU batches with. On a CPU the peak is the process's
resident set (ru_maxrss, which only grows: rows are measured in increasing order); on a GPU,
`torch.cuda.max_memory_allocated` after a reset.

    python benchmarks/large_models.py                         # both shapes, f32 and bf16, CPU
    python benchmarks/large_models.py --shape gemma3-1b --dtype bfloat16 --device cuda
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

import interp  # noqa: E402
from interp import prompts as P  # noqa: E402
from interp.model.load import bundled_tokenizer, wrap  # noqa: E402
from interp.model.runner import Runner  # noqa: E402
from interp.model.tiny import LARGE, large_model  # noqa: E402

TOKENS = 16


def peak_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def forward_peak(model, rows: int) -> int:
    """Peak memory of one forward of `rows` × TOKENS tokens that keeps its keys and values."""
    runner = Runner(model)
    ids = torch.randint(100, 1000, (rows, TOKENS), device=model.device)
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
        torch.cuda.reset_peak_memory_stats(model.device)
    with torch.no_grad():
        hidden, cache = runner.final_hidden(runner.embed(ids), 0, keep_cache=True)
        runner.unembed(hidden[:, -1])
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    del hidden, cache
    return peak_bytes(model.device)


def per_token_estimate(model) -> int:
    """What `runner.token_budget` assumes one token keeps alive in a block (bytes)."""
    arch = model.arch
    size = next(model.hf.parameters()).element_size()
    return 2 * size * (8 * arch.d_model + 3 * arch.d_mlp)


def run(shape: str, dtype, device):
    tok = bundled_tokenizer()
    t = time.perf_counter()
    model = wrap(large_model(shape, tok, dtype), tok, name=f"random-{shape}",
                 source={"kind": "random", "config": shape}, device=device, dtype=dtype)
    built = time.perf_counter() - t
    params = sum(p.numel() for p in model.hf.parameters())
    print(f"\n{shape} {str(dtype).removeprefix('torch.')} on {device}: {model!r}, "
          f"{params / 1e9:.2f} B parameters, built in {built:.0f} s")
    peaks = {rows: forward_peak(model, rows) for rows in (1, 4, 16)}
    per_row = (peaks[16] - peaks[4]) / 12
    estimate = per_token_estimate(model) * TOKENS * model.arch.n_layers
    print(f"  memory per row of {TOKENS} tokens: {per_row / 2**20:.1f} MiB measured "
          f"(peak {peaks[1] / 2**30:.2f} / {peaks[4] / 2**30:.2f} / {peaks[16] / 2**30:.2f} GiB "
          f"at 1 / 4 / 16 rows); token_budget's estimate {estimate / 2**20:.1f} MiB "
          f"(all layers' keys, values and a block's activations), ratio "
          f"{per_row / estimate:.2f}")
    ps = P.professions(model, "train", templates=["The {} said that"])[:6]
    t = time.perf_counter()
    result = interp.trace(model, ps[:1], kinds=("resid", "mlp", "attn"), corruption="swap",
                          progress=False)
    print(f"  trace of 1 prompt ({len(ps[0].input_ids)} tokens, "
          f"{len(result.frame)} cells): {time.perf_counter() - t:.1f} s")
    L = model.arch.n_layers
    t = time.perf_counter()
    edit = interp.lsdm(model, ps, layers=[L - 3, L - 2], attn_layers=[L - 2], stats_tokens=2000,
                       preserve=None, strict=False, progress=False)
    reached = edit.meta["targets_reached"]
    print(f"  LSDM on {len(ps)} prompts, MLP {edit.layers} + attention {edit.attn_layers}: "
          f"{time.perf_counter() - t:.1f} s ({edit.meta['seconds']}), along "
          f"{reached['along']:.2f}; peak so far {peak_bytes(device) / 2**30:.2f} GiB")
    with edit.applied(model):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", action="append", choices=sorted(LARGE))
    ap.add_argument("--dtype", action="append", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"torch threads: {torch.get_num_threads()}, device {device}")
    for shape in args.shape or sorted(LARGE):
        for dtype in args.dtype or ["float32", "bfloat16"]:
            run(shape, getattr(torch, dtype), device)


if __name__ == "__main__":
    main()
