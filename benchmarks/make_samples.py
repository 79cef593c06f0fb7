"""Rebuild or check interp/data/bundled_samples.pt: the bundled model's own sampled text that the
LSDM key statistics use by default (C = E[k kᵀ] over the bundled neutral text plus samples up to
20,000 tokens). Sampling it takes a minute or two on 2 CPU cores; shipping it saves that in the
first `make demo` and in every fresh test run. It is used only for these exact weights (by
fingerprint), this seed and this token count; any other model or setting samples as before.

    python benchmarks/make_samples.py            # sample anew and write the file
    python benchmarks/make_samples.py --check    # sample anew and compare with the file
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

import interp  # noqa: E402
from interp.common.io import atomic_path  # noqa: E402
from interp.mitigate import stats  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "interp" / "data" / stats.SHIPPED_SAMPLES
STATS_TOKENS = 20000  # interp.lsdm's default stats_tokens
SEED = 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the file, write nothing")
    args = ap.parse_args()
    model = interp.load_model()
    have = len(model.tokenizer(stats.neutral_text())["input_ids"])
    n_tokens = STATS_TOKENS - have  # what corpus_tokens asks the sampler for
    start = time.time()
    rows = stats.sample_text(model, n_tokens, seed=SEED)
    print(f"sampled {sum(map(len, rows))} tokens in {len(rows)} rows in {time.time() - start:.0f} s")
    record = {"fingerprint": model.fingerprint(), "seed": SEED, "n_tokens": n_tokens,
              "length": stats.SAMPLE_LENGTH, "rows": rows}
    if args.check:
        shipped = torch.load(OUT)
        same = shipped == record
        print(f"{OUT.name}: {'identical to' if same else 'DIFFERENT from'} a fresh sample")
        return 0 if same else 1
    with atomic_path(OUT) as tmp:
        torch.save(record, tmp)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
