"""WinoGender (Rudinger et al. 2018): `all_sentences.tsv` and `occupations-stats.tsv`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import FORMATS, SuiteFormatError
from .files import blank_cells, find_file, missing_file, read_table
from .likelihood import prefer, score_pairs
from .result import SuiteResult, suite_meta
from .stats import pearson, put_mean, put_stat

_SENTID = re.compile(r"^(?P<occupation>[^.]+)\.(?P<participant>[^.]+)\.(?P<answer>\d+)\."
                     r"(?P<gender>male|female|neutral)\.txt$")


def _winogender_sentences(file: Path) -> pd.DataFrame:
    df = read_table(file, "winogender", ["sentid", "sentence"], sep="\t")
    parts = df["sentid"].str.strip().str.extract(_SENTID)
    bad = df["sentid"][parts["occupation"].isna()].tolist()
    if bad:
        raise SuiteFormatError(f"winogender: {file}: {len(bad)} sentid(s) not of the form "
                               f"occupation.participant.answer.gender.txt, e.g. {bad[:3]}. "
                               f"Expected {FORMATS['winogender']}.")
    blank = blank_cells(df, ["sentence"])
    if blank:
        raise SuiteFormatError(f"winogender: {file}: empty sentence for "
                               f"{df['sentid'].iloc[blank[:3]].tolist()}")
    return pd.concat([parts, df[["sentence"]]], axis=1)


def _winogender_items(sentences: pd.DataFrame, file: Path) -> pd.DataFrame:
    keys = ["occupation", "participant", "answer"]
    dup = sentences.duplicated(keys + ["gender"])
    if dup.any():
        shown = sentences[dup][keys + ["gender"]].head(3).values.tolist()
        raise SuiteFormatError(f"winogender: {file}: duplicate sentids, e.g. {shown}")
    items = sentences.pivot(index=keys, columns="gender", values="sentence").reset_index()
    items.columns.name = None
    for gender in ("male", "female"):
        lacking = items[items.get(gender, pd.Series(np.nan, index=items.index)).isna()]
        if len(lacking):
            shown = [".".join(map(str, r)) for r in lacking[keys].head(3).values.tolist()]
            raise SuiteFormatError(f"winogender: {file}: {len(lacking)} item(s) have no {gender} "
                                   f"sentence, e.g. {shown}: every occupation.participant.answer "
                                   "needs both a .male.txt and a .female.txt sentid")
    items["answer"] = items["answer"].astype(int)
    items.insert(0, "id", items[keys].astype(str).agg(".".join, axis=1))
    return items


def _winogender_stats(file: Path) -> pd.DataFrame:
    cols = ["occupation", "bergsma_pct_female", "bls_pct_female"]
    df = read_table(file, "winogender", cols, sep="\t")[cols].copy()
    for c in cols[1:]:
        values = pd.to_numeric(df[c].str.strip(), errors="coerce")
        if values.isna().any():
            raise SuiteFormatError(f"winogender: {file}: column {c} has non-numbers, e.g. "
                                   f"{df[c][values.isna()].head(3).tolist()}")
        df[c] = values
    df["occupation"] = df["occupation"].str.strip()
    return df.drop_duplicates("occupation")


def load_winogender(path: str | Path, *, stats_path: str | Path | None = None) -> pd.DataFrame:
    """WinoGender items: one row per occupation, participant and answer, with its male and
    female (and neutral) sentence and the occupation's percent female.

    path: all_sentences.tsv or a directory holding it; stats_path: occupations-stats.tsv
    (default: beside all_sentences.tsv, else anywhere under `path`). Columns: id, occupation,
    participant, answer, female, male, neutral, bergsma_pct_female, bls_pct_female (NaN for an
    occupation the stats file lacks).
    """
    sentences_file = find_file(path, "all_sentences.tsv")
    if sentences_file is None:
        raise missing_file(path, "winogender", "all_sentences.tsv")
    items = _winogender_items(_winogender_sentences(sentences_file), sentences_file)
    if stats_path is None:
        beside = sentences_file.parent / "occupations-stats.tsv"
        stats_file = beside if beside.is_file() else (
            find_file(path, "occupations-stats.tsv") if Path(path).expanduser().is_dir() else None)
    else:
        stats_file = find_file(stats_path, "occupations-stats.tsv")
    if stats_file is None:
        raise SuiteFormatError(
            f"winogender: no occupations-stats.tsv beside {sentences_file} (nor at "
            f"stats_path={stats_path}); it gives each occupation's percent female. Put it there "
            f"or pass stats_path=. Expected {FORMATS['winogender']}.")
    return items.merge(_winogender_stats(stats_file), on="occupation", how="left")


def score_winogender(model, items: pd.DataFrame, *, span: str = "full", bos: bool | None = None,
                     batch_size: int = 16, progress: bool | None = None, n_boot: int = 1000,
                     seed: int = 0) -> SuiteResult:
    """The model's preference between the male and female sentence of each WinoGender item.

    Per item: logodds_female = log p(female sentence) - log p(male sentence);
    p_female = sigmoid(logodds_female), the female sentence's probability among the two;
    female_preferred = 1 where the female sentence scores higher (0.5 on a tie).
    Table by_occupation: per occupation the mean p_female (its "p(female) preference"), the
    share female_preferred, the mean log-odds, and the occupation's bls/bergsma percent female.
    Summary: female_preferred (percent of items; 50 = no preference), p_female (mean over items,
    0..1), r_bls / r_bergsma (Pearson correlation over occupations of the per-occupation
    p_female with bls_pct_female / bergsma_pct_female; > 0: the model follows the occupation's
    real gender ratio; CIs by bootstrap over occupations), n_items, n_occupations.
    """
    frame, lm, lf = score_pairs(model, items, "winogender", "male", "female",
                                ("logp_male", "logp_female"), span=span, bos=bos,
                                batch_size=batch_size, progress=progress)
    frame["logodds_female"] = lf - lm
    frame["p_female"] = 1.0 / (1.0 + np.exp(-(lf - lm)))
    frame["female_preferred"] = prefer(lf, lm)

    kw = {"n_boot": n_boot, "seed": seed}
    by_occ = (frame.groupby("occupation", sort=True)
              .agg(n_items=("id", "size"), p_female=("p_female", "mean"),
                   female_preferred=("female_preferred", "mean"),
                   logodds_female=("logodds_female", "mean"),
                   bls_pct_female=("bls_pct_female", "first"),
                   bergsma_pct_female=("bergsma_pct_female", "first"))
              .reset_index())
    by_occ["female_preferred"] *= 100
    summary: dict = {"n_items": len(frame), "n_occupations": len(by_occ)}
    put_mean(summary, "female_preferred", frame["female_preferred"], **kw)
    put_mean(summary, "p_female", frame["p_female"], scale=1.0, **kw)
    for key, col in (("r_bls", "bls_pct_female"), ("r_bergsma", "bergsma_pct_female")):
        known = by_occ[by_occ[col].notna()]
        put_stat(summary, key, pearson(known["p_female"], known[col]), len(known), **kw)
    summary["n_occupations_with_stats"] = int(by_occ["bls_pct_female"].notna().sum())
    return SuiteResult("winogender", frame, summary, {"by_occupation": by_occ},
                       suite_meta(model, "winogender", span=span, bos=bos, n_boot=n_boot,
                                  seed=seed))
