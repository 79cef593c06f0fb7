"""Write the small synthetic corpus that ships in interp/data/corpus/ (run from the repository
root; seeded, so it writes the same files every time).

Sentences about the gender-neutral occupations of interp/data/occupations.csv, each with a
gender term drawn female with probability sigmoid(-2.5 x the occupation's stereotype score)
(the score is positive for male-stereotyped occupations), mixed with sentences that mention no
occupation. It exists so that `interp corpus count` / `compare`, their tests and notebook run
offline; its gender shares are the generator's, and say nothing about any real corpus or about
the bundled model's training data.

    python benchmarks/sample_corpus.py
"""

from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path

import pandas as pd

FRAMES = ("The {o} said that {p} would be late for the meeting.",
          "{P} has worked as a {o} for many years.",
          "When the {o} arrived, {p} asked for a glass of water.",
          "Our neighbour is a {o}, and {p} is always busy.",
          "The {o} thanked {pa} {kin} for the help.",
          "A {o} told me that {p} had never seen such a storm.",
          "The {o} finished {pa} shift and went home.",
          "Everyone agreed that the {o} knew what {p} was doing.")
FILLER = ("The train was delayed by twenty minutes.", "It rained all afternoon in the valley.",
          "The market opens at eight on Saturdays.", "A new bridge was built across the river.",
          "The library moved to a larger building.", "Prices rose again in the spring.")
FORMS = {"female": {"p": "she", "P": "She", "pa": "her", "kin": "sister"},
         "male": {"p": "he", "P": "He", "pa": "his", "kin": "brother"}}


def main(out: Path = Path("interp/data/corpus"), shards: int = 4, seed: int = 0):
    rng = random.Random(seed)
    occ = pd.read_csv("interp/data/occupations.csv")
    occ = occ[occ.definitional.abs() <= 0.3]
    docs = []
    for r in occ.itertuples():
        q = 1 / (1 + math.exp(2.5 * r.stereotypical))
        for _ in range(rng.randint(6, 14)):
            gender = "female" if rng.random() < q else "male"
            docs.append(rng.choice(FRAMES).format(o=r.occupation, **FORMS[gender]))
    docs += [rng.choice(FILLER) for _ in range(len(docs) // 4)]
    rng.shuffle(docs)
    out.mkdir(parents=True, exist_ok=True)
    per = -(-len(docs) // shards)
    for s in range(shards):
        lines = [json.dumps({"id": i, "text": " ".join(docs[i: min(i + 5, (s + 1) * per)])})
                 + "\n" for i in range(s * per, min(len(docs), (s + 1) * per), 5)]
        # mtime=0: the same bytes on every run
        with gzip.GzipFile(out / f"shard{s}.jsonl.gz", "wb", mtime=0) as f:
            f.write("".join(lines).encode("utf-8"))
    print(f"{len(docs)} sentences in {shards} shards under {out}")


if __name__ == "__main__":
    main()
