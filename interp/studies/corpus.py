"""Corpus co-occurrence of occupations with gender terms (after "How far can bias go?", arXiv
2411.19240).

Per occupation, every mention in the corpus is counted with the female and the male terms
(`interp/data/gender_terms.csv`) in its window: the same sentence, or the N words on each side.
The corpus' female share of an occupation is female / (female + male) over all its mentions.

A corpus is a list of shards: text files, JSONL files (optionally gzipped) with a `text` field
per line (Dolma's layout), or a Hugging Face `datasets` directory (`save_to_disk`). Each shard
is counted on its own, in one process or as a Ray task (`ray=`, `interp corpus count --ray`)
with the same result; with `out=`, each shard's counts are written when it finishes, so a count
that is killed resumes with the finished shards skipped.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..common.errors import InterpError
from ..common.io import atomic_path
from ..measure.audit_items import bundled_table

WORD = re.compile(r"[a-z]+(?:['-][a-z]+)*")
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
COLUMNS = ("occupation", "mentions", "female", "male")


class CorpusError(InterpError):
    """A corpus shard that cannot be read."""


def gender_terms() -> dict[str, str]:
    """word -> "female" or "male" (`interp/data/gender_terms.csv`)."""
    return dict(zip(*bundled_table("gender_terms.csv")[["word", "gender"]].T.values))


def default_occupations() -> list[str]:
    """The occupations of `interp/data/occupations.csv` whose meaning carries no gender
    (|definitional| <= 0.3), multi-word ones included."""
    occ = bundled_table("occupations.csv")
    return sorted(occ.occupation[occ.definitional.astype(float).abs() <= 0.3])


class Counter:
    """Counts occupation mentions and their co-occurring gender terms in texts."""

    def __init__(self, occupations: Sequence[str] | None = None, window: str | int = "sentence",
                 terms: dict[str, str] | None = None):
        if window != "sentence" and not (isinstance(window, int) and window > 0):
            raise InterpError(f"window must be 'sentence' or a positive number of words, not "
                              f"{window!r}")
        self.window = window
        self.occupations = list(occupations or default_occupations())
        self.terms = terms or gender_terms()
        # first word -> [(all words, occupation)], longest first, so "police officer" wins
        self.first: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        for k, occ in enumerate(self.occupations):
            words = tuple(WORD.findall(occ.lower()))
            self.first.setdefault(words[0], []).append((words, k))
        for v in self.first.values():
            v.sort(key=lambda wk: -len(wk[0]))
        self.sign = {w: (1 if g == "female" else 2) for w, g in self.terms.items()}

    def empty(self) -> np.ndarray:
        """Counts per occupation: mentions, female, male."""
        return np.zeros((len(self.occupations), 3), dtype=np.int64)

    def add(self, counts: np.ndarray, text: str) -> None:
        text = text.lower()
        units = SENTENCE.split(text) if self.window == "sentence" else [text]
        for unit in units:
            words = WORD.findall(unit)
            mentions = []
            i, n = 0, len(words)
            while i < n:
                cands = self.first.get(words[i])
                if cands:
                    for ws, k in cands:
                        if tuple(words[i: i + len(ws)]) == ws:
                            mentions.append((i, i + len(ws), k))
                            i += len(ws) - 1
                            break
                i += 1
            if not mentions:
                continue
            sign = self.sign
            kind = [sign.get(w, 0) for w in words]
            if self.window == "sentence":
                f, m = kind.count(1), kind.count(2)
                for _, _, k in mentions:
                    counts[k] += (1, f, m)
            else:
                fem = np.concatenate([[0], np.cumsum(np.array(kind) == 1)])
                mal = np.concatenate([[0], np.cumsum(np.array(kind) == 2)])
                for a, b, k in mentions:
                    lo, hi = max(0, a - self.window), min(n, b + self.window)
                    counts[k] += (1, fem[hi] - fem[lo], mal[hi] - mal[lo])


def shard_texts(path: str | Path) -> Iterator[str]:
    """The texts of one shard: a text file (one text), JSONL(.gz) with a `text` field per
    line, or a `datasets` directory saved with `save_to_disk` (its `text` column)."""
    p = Path(path)
    if p.is_dir():
        from datasets import load_from_disk

        data = load_from_disk(str(p))
        if hasattr(data, "keys"):  # a DatasetDict: every split
            for split in data.values():
                yield from _column(split, p)
        else:
            yield from _column(data, p)
        return
    name = p.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
        opener = gzip.open if name.endswith(".gz") else open
        # utf-8-sig: a shard written by a Windows tool may open with a byte-order mark
        with opener(p, "rt", encoding="utf-8-sig") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except ValueError as e:
                    raise CorpusError(f"{p}: line {line_no} is not JSON ({e})") from e
                if not isinstance(doc, dict) or "text" not in doc:
                    raise CorpusError(f"{p}: line {line_no} has no 'text' field (JSONL shards "
                                      "need one object per line with 'text')")
                yield str(doc["text"])
        return
    yield p.read_text(encoding="utf-8-sig")


def _column(dataset, path):
    if "text" not in dataset.column_names:
        raise CorpusError(f"{path}: the dataset has no 'text' column (it has "
                          f"{', '.join(dataset.column_names)})")
    for batch in dataset.iter(batch_size=1000):
        yield from batch["text"]


def shard_key(path: str | Path, counter: Counter) -> str:
    """A name for one shard's counts: its path, size and modification time, and the counting
    settings, so a changed shard or setting is counted again."""
    p = Path(path).resolve()
    st = p.stat()
    h = hashlib.sha1(json.dumps([str(p), st.st_size, st.st_mtime_ns, counter.window,
                                 counter.occupations, sorted(counter.terms.items())]).encode())
    return h.hexdigest()[:16]


def count_shard(path, counter: Counter) -> tuple[np.ndarray, int, int]:
    """(counts, documents, bytes) of one shard."""
    counts = counter.empty()
    docs = size = 0
    try:
        for text in shard_texts(path):
            counter.add(counts, text)
            docs += 1
            size += len(text)
    except (OSError, UnicodeDecodeError, EOFError, ValueError) as e:
        raise CorpusError(f"cannot read shard {path}: {e}") from e
    return counts, docs, size


def sample_shards() -> list[Path]:
    """The small synthetic corpus that ships with interp (data card: interp/data/README.md)."""
    from importlib import resources

    folder = resources.files("interp.data").joinpath("corpus")
    return sorted(Path(str(folder.joinpath(n.name))) for n in folder.iterdir()
                  if n.name.endswith(".jsonl.gz"))


def expand(paths: Iterable[str | Path]) -> list[Path]:
    """Shards: files as given, and the shard files inside directories that are not `datasets`
    directories (sorted); "sample" is the corpus that ships with interp."""
    out = []
    for path in paths:
        if str(path) == "sample" and not Path(path).exists():
            out += sample_shards()
            continue
        p = Path(path)
        if not p.exists():
            raise CorpusError(f"no such corpus file or directory: {p}")
        if p.is_dir() and not (p / "dataset_info.json").exists() \
                and not (p / "dataset_dict.json").exists():
            out += sorted(q for q in p.rglob("*") if q.is_file()
                          and q.name.lower().endswith((".txt", ".jsonl", ".jsonl.gz",
                                                       ".json.gz", ".ndjson")))
        else:
            out.append(p)
    if not out:
        raise CorpusError("the corpus has no shards (text, JSONL(.gz) or datasets directories)")
    return out


class CorpusCounts:
    """Per occupation: mentions, female and male co-occurrences, the female share; `meta`: the
    shards, documents, characters, window and the shards skipped as unreadable."""

    def __init__(self, frame: pd.DataFrame, meta: dict):
        self.frame, self.meta = frame, meta

    def to_frame(self) -> pd.DataFrame:
        return self.frame.copy()

    def save(self, path: str | Path) -> Path:
        with atomic_path(path) as tmp:
            self.frame.to_csv(tmp, index=False)
        with atomic_path(Path(path).with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(self.meta, indent=2, default=str))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "CorpusCounts":
        meta_path = Path(path).with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise InterpError(f"cannot read {path} as a corpus counts CSV: "
                              f"{str(e).splitlines()[0]}") from None
        missing = [c for c in COLUMNS if c not in frame.columns]
        if missing:
            raise InterpError(f"{path} is not a corpus counts table (no column {missing[0]!r}; "
                              f"it needs {', '.join(COLUMNS)}): pass the CSV `interp corpus "
                              "count` wrote")
        return cls(frame, meta)


def _frame(counter: Counter, counts: np.ndarray) -> pd.DataFrame:
    f = pd.DataFrame(counts, columns=COLUMNS[1:])
    f.insert(0, "occupation", counter.occupations)
    gendered = f.female + f.male
    f["female_share"] = np.where(gendered > 0, f.female / gendered.where(gendered > 0, 1),
                                 np.nan)
    return f.sort_values(["mentions", "occupation"], ascending=[False, True]).reset_index(
        drop=True)


def count_corpus(paths, *, window: str | int = "sentence", occupations=None,
                 out: str | Path | None = None, skip_bad: bool = False,
                 progress: bool | None = None, ray: bool | str | None = None,
                 workers: int | None = None) -> CorpusCounts:
    """Count the corpus shard by shard: in this process, or with `ray`, as one Ray task per
    shard, with the same result.

    out: a directory where each finished shard's counts are kept as it finishes (a rerun skips
    them). skip_bad: an unreadable shard is named in `meta["skipped"]` and the rest still
    counted; otherwise it stops the count. ray: True for a local Ray started here (`workers`
    CPUs, default every core), or a cluster's address ("auto", "ray://host:10001"); a Ray this
    process has already joined is used as it is. Ray workers read the shards by path and the
    driver writes `out`, so on a cluster the shards must be at the same path on every node."""
    counter = Counter(occupations, window)
    shards = expand(paths if isinstance(paths, (list, tuple)) else [paths])
    done = Path(out) / "shards" if out is not None else None
    if done is not None:
        done.mkdir(parents=True, exist_ok=True)
    counted: dict[int, tuple] = {}  # shard index -> (counts, documents, characters)
    todo = []
    for i, shard in enumerate(shards):
        kept = done / f"{shard_key(shard, counter)}.json" if done is not None else None
        if kept is not None and kept.exists():
            saved = json.loads(kept.read_text())
            counted[i] = (np.array(saved["counts"], dtype=np.int64), saved["docs"],
                          saved["chars"])
        else:
            todo.append((i, shard, kept))
    resumed, skipped = len(counted), {}
    show = progress if progress is not None else len(shards) > 1
    if ray and todo:
        outcomes = _count_ray(todo, counter, ray, workers)
    else:
        outcomes = _count_here(todo, counter)
    with contextlib.closing(outcomes), tqdm(total=len(shards), initial=resumed, desc="shards",
                                            unit="shard", disable=not show) as bar:
        for (i, shard, kept), outcome in outcomes:
            bar.update()
            if isinstance(outcome, CorpusError):
                if not skip_bad:
                    raise CorpusError(f"{outcome} (pass skip_bad=True / --skip-bad to count the "
                                      "other shards)") from outcome
                skipped[i] = {"shard": str(shard), "error": str(outcome)}
                continue
            c, d, s = counted[i] = outcome
            if kept is not None:
                with atomic_path(kept) as tmp:
                    tmp.write_text(json.dumps({"shard": str(shard), "counts": c.tolist(),
                                               "docs": d, "chars": s}))
    total = counter.empty()
    for c, _, _ in counted.values():
        total += c
    meta = {"shards": [str(s) for s in shards], "n_shards": len(shards),
            "documents": sum(d for _, d, _ in counted.values()),
            "characters": sum(s for _, _, s in counted.values()), "window": window,
            "skipped": [skipped[i] for i in sorted(skipped)], "resumed": resumed}
    return CorpusCounts(_frame(counter, total), meta)


def _count_here(todo, counter: Counter):
    """(shard, counts or the CorpusError) for each shard, counted in this process in order."""
    for item in todo:
        yield item, _count_or_error(item[1], counter)


def _count_or_error(path, counter: Counter):
    # An unreadable shard is a value, not a raise: under Ray a raise would come back wrapped in
    # a RayTaskError with the worker's traceback, and --skip-bad must see the plain message.
    try:
        return count_shard(path, counter)
    except CorpusError as e:
        return e


def _count_ray(todo, counter: Counter, address, workers):
    """As `_count_here`, as the shards' Ray tasks finish."""
    from ..common.ray_pool import as_completed, parallelism, ray_session

    with ray_session(address, workers) as ray:
        shared = ray.put(counter)  # shipped once, not once per task
        task = ray.remote(num_cpus=1)(_count_or_error)

        def submit(item):
            # Absolute: a worker's working directory is not the driver's.
            return task.remote(str(Path(item[1]).resolve()), shared)

        for item, outcome in as_completed(ray, submit, todo, parallelism(ray, workers)):
            if isinstance(outcome, CorpusError):  # named as the caller named it, as in-process
                outcome = CorpusError(str(outcome).replace(str(Path(item[1]).resolve()),
                                                           str(item[1])))
            yield item, outcome
