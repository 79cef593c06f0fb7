"""Models at the size researchers study: random weights in the shapes of Llama-3.2-1B and
Gemma-3-1B (`interp.model.tiny.LARGE`), in float32 and bfloat16, on this machine's CPU or a GPU.

For each shape and precision it runs a trace (residual stream, MLP, attention; one prompt, swap
corruption) and an LSDM edit of two MLPs and one attention layer (a few prompts, statistics
over 9,000 tokens: this checks that the path runs, not the edit's quality), and measures the
memory one more row of a batch costs in a forward that keeps its keys and values (what the
trace engine and the editor run): the peak's growth from 16 to 64 rows, against the
per-token estimate `token_budget` sizes GPU batches with. On a CPU the peak is the process's
resident set sampled during the forward (rows in increasing order); on a GPU,
`torch.cuda.max_memory_allocated` after a reset.

    python benchmarks/large_models.py                         # both shapes, f32 and bf16, CPU
    python benchmarks/large_models.py --shape gemma3-1b --dtype bfloat16 --device cuda
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import psutil  # noqa: E402
import torch  # noqa: E402

import interp  # noqa: E402
from interp import prompts as P  # noqa: E402
from interp.model.load import bundled_tokenizer, wrap  # noqa: E402
from interp.model.runner import Runner, token_bytes  # noqa: E402
from interp.model.tiny import LARGE, large_model  # noqa: E402

TOKENS = 16
# The key statistics need more tokens than the widest edited input (d_mlp: 8192 for Llama-3.2-1B's
# shape) or λC + KKᵀ is singular; the default 20,000 would only cost more time here.
STATS_TOKENS = 9000


def peak_bytes(device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssPeak:
    """The process's resident set sampled every 0.5 ms on a thread: its peak while the block
    runs. (ru_maxrss is no use here: building the model's weights sets a peak no forward
    reaches.) The allocator keeps what it freed, so forwards measured in increasing size each
    add only what they need beyond the last."""

    def __enter__(self):
        self.proc, self.peak, self.done = psutil.Process(), 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.done.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.0005)

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def forward_peak(model, rows: int) -> int:
    """Peak memory of one forward of `rows` × TOKENS tokens that keeps its keys and values."""
    runner = Runner(model)
    ids = torch.randint(100, 1000, (rows, TOKENS), device=model.device)
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(model.device)
        torch.cuda.reset_peak_memory_stats(model.device)
    with RssPeak() as rss, torch.no_grad():
        hidden, cache = runner.final_hidden(runner.embed(ids), 0, keep_cache=True)
        runner.unembed(hidden[:, -1])
        if cuda:
            torch.cuda.synchronize(model.device)
    del hidden, cache
    return torch.cuda.max_memory_allocated(model.device) if cuda else rss.peak


def run(shape: str, dtype, device):
    tok = bundled_tokenizer()
    t = time.perf_counter()
    model = wrap(large_model(shape, tok, dtype), tok, name=f"random-{shape}",
                 source={"kind": "random", "config": shape}, device=device, dtype=dtype)
    built = time.perf_counter() - t
    params = sum(p.numel() for p in model.hf.parameters())
    print(f"\n{shape} {str(dtype).removeprefix('torch.')} on {device}: {model!r}, "
          f"{params / 1e9:.2f} B parameters, built in {built:.0f} s")
    peaks = {rows: forward_peak(model, rows) for rows in (1, 4, 16, 64)}
    per_row = (peaks[64] - peaks[16]) / 48
    estimate = token_bytes(model) * TOKENS
    print(f"  memory per row of {TOKENS} tokens: {per_row / 2**20:.1f} MiB measured "
          f"(peak {' / '.join(f'{p / 2**30:.2f}' for p in peaks.values())} GiB "
          f"at {' / '.join(map(str, peaks))} rows); token_budget's estimate {estimate / 2**20:.1f} MiB "
          f"(a block's activations twice, keys and values in every layer), measured / estimate "
          f"{per_row / estimate:.2f}")
    ps = P.professions(model, "train", templates=["The {} said that"])[:6]
    t = time.perf_counter()
    result = interp.trace(model, ps[:1], kinds=("resid", "mlp", "attn"), corruption="swap",
                          progress=False)
    print(f"  trace of 1 prompt ({len(ps[0].input_ids)} tokens, "
          f"{len(result.frame)} cells): {time.perf_counter() - t:.1f} s")
    L = model.arch.n_layers
    t = time.perf_counter()
    edit = interp.lsdm(model, ps, layers=[L - 3, L - 2], attn_layers=[L - 2], stats_tokens=STATS_TOKENS,
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
