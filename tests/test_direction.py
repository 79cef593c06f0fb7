"""The direction measures: stereotype-following share about the median lean, and the lean's
correlation with the stereotype score and with labour statistics, against plain computations."""

import numpy as np
import pytest

from interp.measure.direction import STEREOTYPED, put_direction


def _plain_following(lean, score):
    centred = lean - np.median(lean)
    keep = np.abs(score) >= STEREOTYPED
    agree = [0.5 if c == 0 else float(np.sign(c) == np.sign(s))
             for c, s in zip(centred[keep], score[keep])]
    return 100 * np.mean(agree)


@pytest.fixture
def items():
    rng = np.random.default_rng(0)
    score = rng.choice([-0.6, -0.3, 0.0, 0.2, 0.5, 0.8], 300)
    lean = 0.8 * score + rng.normal(0, 0.5, 300) + 1.0  # a male default on top of the stereotype
    bls = np.where(rng.random(300) < 0.3, 50 - 40 * score + rng.normal(0, 5, 300), np.nan)
    return lean, score, bls


def test_each_measure_equals_a_plain_computation(items):
    lean, score, bls = items
    s: dict = {}
    put_direction(s, lean, score, bls_pct_female=bls, n_boot=200)
    assert s["stereotype_following"] == pytest.approx(_plain_following(lean, score))
    assert s["stereotype_correlation"] == pytest.approx(np.corrcoef(lean, score)[0, 1])
    known = np.isfinite(bls)
    assert s["bls_correlation"] == pytest.approx(np.corrcoef(lean[known], 100 - bls[known])[0, 1])
    for key in ("stereotype_following", "stereotype_correlation", "bls_correlation"):
        assert s[f"{key}_lo"] <= s[key] <= s[f"{key}_hi"]
    assert s["stereotype_following"] > 60 and s["bls_correlation"] > 0.3


def test_a_shared_default_lean_is_not_a_stereotype(items):
    lean, score, _ = items
    a, b = {}, {}
    put_direction(a, lean, score, n_boot=50)
    put_direction(b, lean + 5.0, score, n_boot=50)  # everyone leans further male
    assert a["stereotype_following"] == b["stereotype_following"]
    assert a["stereotype_correlation"] == pytest.approx(b["stereotype_correlation"])
    flipped: dict = {}
    put_direction(flipped, -lean, score, n_boot=50)  # the anti-stereotype
    assert flipped["stereotype_following"] == pytest.approx(100 - a["stereotype_following"])


def test_no_direction_reads_about_fifty_and_zero():
    rng = np.random.default_rng(1)
    score = rng.choice([-0.5, 0.5], 2000)
    s: dict = {}
    put_direction(s, rng.normal(0, 1, 2000), score, n_boot=200)
    assert s["stereotype_following_lo"] < 50 < s["stereotype_following_hi"]
    assert s["stereotype_correlation_lo"] < 0 < s["stereotype_correlation_hi"]


def test_too_few_labour_statistics_give_no_bls_correlation(items):
    lean, score, _ = items
    bls = np.full(len(lean), np.nan)
    bls[:5] = 40.0
    s: dict = {}
    put_direction(s, lean, score, bls_pct_female=bls, n_boot=20)
    assert "bls_correlation" not in s
