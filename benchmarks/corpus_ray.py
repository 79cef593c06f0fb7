"""Corpus counting on Ray: MB of text per minute in one process, on one Ray worker and on two,
over the same synthetic shards (`corpus_count.synthetic`: seeded sentences about occupations).

Ray is started before each timed count and each of its workers has imported interp, so the
times are counting, not Ray's start-up; that start-up (`ray.init` and the workers' first import
of interp, 3-5 s here) is printed apart. Every count is checked against the
single-process one. Target: two workers count at least 1.6x as fast as one.

    python benchmarks/corpus_ray.py --mb 160 --shards 16
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import ray
from corpus_count import synthetic

from interp.studies import corpus as C


@ray.remote(num_cpus=1)
def ready():
    """A worker that has imported what a counting task imports. Held for a second, so that the
    n warm-up tasks run at once, each in its own worker, and none of them is left cold."""
    import interp.studies.corpus  # noqa: F401

    time.sleep(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=160.0, help="megabytes of text (default 160)")
    ap.add_argument("--shards", type=int, default=16, help="shards (default 16)")
    ap.add_argument("--window", default="sentence", help="sentence, or N words")
    args = ap.parse_args()
    window = args.window if args.window == "sentence" else int(args.window)
    with tempfile.TemporaryDirectory() as tmp:
        shards = synthetic(args.mb, Path(tmp), shards=args.shards)
        size = sum(p.stat().st_size for p in shards) / 1e6
        print(f"{size:.1f} MB in {len(shards)} shards, window {window}")

        t = time.perf_counter()
        one = C.count_corpus(shards, window=window, progress=False)
        rates = {"one process": size / (time.perf_counter() - t) * 60}
        print(f"one process:  {rates['one process']:7.1f} MB/min")
        for n in (1, 2):
            t = time.perf_counter()
            ray.init(num_cpus=n, include_dashboard=False, logging_level=logging.WARNING)
            ray.get([ready.remote() for _ in range(n)])
            start = time.perf_counter() - t
            t = time.perf_counter()
            result = C.count_corpus(shards, window=window, ray=True, progress=False)
            s = time.perf_counter() - t
            ray.shutdown()
            assert result.frame.equals(one.frame) and result.meta == one.meta
            rates[n] = size / s * 60
            print(f"Ray, {n} worker{'s' if n > 1 else ' '}: {rates[n]:7.1f} MB/min "
                  f"({s:.1f} s; Ray start-up and warm-up {start:.1f} s before it)")
        print(f"2 workers / 1 worker: {rates[2] / rates[1]:.2f}x "
              f"(target 1.6x); 1 worker / one process: {rates[1] / rates['one process']:.2f}x")


if __name__ == "__main__":
    main()
