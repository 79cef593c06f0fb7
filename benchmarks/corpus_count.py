"""Corpus counting speed: MB of text per minute, single process, on a synthetic corpus.

Writes --mb megabytes of JSONL shards (sentences about occupations with gender terms, from a
seeded generator; it is only text to count, nothing about a real corpus) and counts them with
`interp.studies.corpus.count_corpus` in one process, sentence windows and 10-word windows.
Target: at least 20 MB per minute per core.

    python benchmarks/corpus_count.py --mb 40
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from interp.studies import corpus as C

FRAMES = ("The {o} said that {p} would be late.", "{P} met the {o} at the station.",
          "After lunch the {o} called {p2} {n}.", "Nobody knew why the {o} had left early.",
          "The {o} and the {o2} argued about the schedule for an hour.")
PRONOUNS = (("he", "He", "his", "brother"), ("she", "She", "her", "sister"))


def synthetic(mb: float, folder: Path, shards: int = 8, seed: int = 0) -> list[Path]:
    rng = random.Random(seed)
    occ = C.default_occupations()
    per_shard = int(mb * 1e6 / shards)
    paths = []
    for s in range(shards):
        path = folder / f"shard{s:03d}.jsonl"
        size = 0
        with open(path, "w") as f:
            while size < per_shard:
                sents = []
                for _ in range(rng.randint(5, 15)):
                    p, P, p2, n = rng.choice(PRONOUNS)
                    sents.append(rng.choice(FRAMES).format(o=rng.choice(occ), o2=rng.choice(occ),
                                                           p=p, P=P, p2=p2, n=n))
                line = json.dumps({"text": " ".join(sents)}) + "\n"
                f.write(line)
                size += len(line)
        paths.append(path)
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=40.0, help="megabytes of text (default 40)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        shards = synthetic(args.mb, Path(tmp))
        size = sum(p.stat().st_size for p in shards) / 1e6
        for window in ("sentence", 10):
            t = time.perf_counter()
            result = C.count_corpus(shards, window=window, progress=False)
            s = time.perf_counter() - t
            print(f"window {window!s:>8}: {size:.1f} MB in {s:.1f} s = {size / s * 60:.1f} MB/min "
                  f"(one process), {result.meta['documents']} documents, "
                  f"{int(result.frame.mentions.sum())} occupation mentions")


if __name__ == "__main__":
    main()
