"""The held-out sentence shapes: their data, how frames are filled, and that the scores equal a
plain one-prompt-at-a-time reference on the tiny random Llama."""

import numpy as np
import pytest
import torch

import interp
from interp import prompts as P
from interp.measure import shapes as S
from interp.measure.evaluate import evaluate


def test_every_family_has_thirty_frames_of_its_own_shape():
    table = S.frames()
    assert tuple(table.family.unique()) == S.FAMILIES
    for family, group in table.groupby("family"):
        assert len(group) >= 30, family
        assert group.frame.is_unique
        for frame in group.frame:
            assert frame.count("{occupation}") == 1
            assert ("{pronoun}" in frame) == (family == "sentence_pairs")
    assert set(table.slot) == set(S.SLOT_PRONOUNS)


def test_no_frame_is_a_fitting_template():
    fitted = {t.format("{occupation}") for t in (*P.TEMPLATES, *interp.EDIT_TEMPLATES,
                                                 *interp.LAST_TOKEN_TEMPLATES)}
    frames = set(S.frames().frame)
    assert not frames & fitted
    # nor does a slot frame merely extend a template: its pronoun would follow the same words
    assert not [f for f in frames for t in fitted if f.startswith(t)]


def test_frames_are_filled_with_held_out_occupations_reproducibly():
    test = set(P.occupations(split="test").occupation)
    a = S.items("deep", per_frame=5, seed=3)
    assert len(a) == 5 * len(S.frames("deep")) and set(a.occupation) <= test
    assert a.equals(S.items("deep", per_frame=5, seed=3))
    assert not a.equals(S.items("deep", per_frame=5, seed=4))
    assert all(o in t for o, t in zip(a.occupation, a.text))


def test_sentence_pairs_differ_only_in_the_pronoun_and_need_a_stereotype():
    pairs = S.items("sentence_pairs")
    assert (pairs.stereotypical.abs() >= S.PAIR_MIN_STEREOTYPE).all()
    for row in pairs.itertuples():
        male, female = row.male.split(), row.female.split()
        diff = [(a, b) for a, b in zip(male, female) if a != b]
        assert len(male) == len(female) and len(diff) == 1
        assert tuple(w.strip(".,") for w in diff[0]) in {("he", "she"), ("him", "her"),
                                                          ("his", "her")}


def test_an_unknown_family_is_a_clear_error():
    with pytest.raises(interp.InterpError, match="unknown sentence-shape family 'shallow'"):
        S.items("shallow")


def _next_logprobs(model, text):
    ids = torch.tensor([model.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return model.hf(input_ids=ids).logits[0, -1].double().log_softmax(-1)


def test_slot_scores_equal_a_plain_forward_per_item(tiny_llama):
    frame = S.items("object_possessive", per_frame=1)
    scored = S.score_slots(tiny_llama, frame, batch_size=7, progress=False)
    for row in scored.sample(6, random_state=0).itertuples():
        male, female = S.SLOT_PRONOUNS[row.slot]
        ids = [tiny_llama.tokenizer(w, add_special_tokens=False)["input_ids"][0]
               for w in (male, female)]
        lp = _next_logprobs(tiny_llama, row.text)
        assert row.logp_male == pytest.approx(float(lp[ids[0]]), abs=1e-4)
        assert row.logp_female == pytest.approx(float(lp[ids[1]]), abs=1e-4)
        pm, pf = np.exp(row.logp_male), np.exp(row.logp_female)
        assert row.normalised_gap == pytest.approx((pm - pf) / (pm + pf))


def test_pair_scores_compare_whole_sentences_by_likelihood(tiny_llama):
    frame = S.items("sentence_pairs", per_frame=1).head(6)
    scored = S.score_sentence_pairs(tiny_llama, frame, progress=False)
    for row in scored.itertuples():
        own = {}
        for gender in ("male", "female"):
            ids = tiny_llama.tokenizer(getattr(row, gender))["input_ids"]
            with torch.no_grad():
                lp = tiny_llama.hf(input_ids=torch.tensor([ids])).logits[0].double()
            lp = lp.log_softmax(-1)[:-1].gather(1, torch.tensor(ids[1:])[:, None])
            own[gender] = float(lp.sum())
        pro, anti = ((own["male"], own["female"]) if row.stereotypical > 0
                     else (own["female"], own["male"]))
        assert row.logp_pro_minus_anti == pytest.approx(pro - anti, abs=1e-3)
        assert row.pro_preferred == (1.0 if pro > anti else 0.0)
    same = frame.assign(female=frame.male)  # identical sentences tie
    assert set(S.score_sentence_pairs(tiny_llama, same, progress=False).pro_preferred) == {0.5}


def test_evaluate_reports_every_family_with_intervals(tiny_llama):
    report = evaluate(tiny_llama, ("shapes",), n_boot=200)
    f = report.frame.set_index(["suite", "metric"])
    for family in S.FAMILIES[:3]:
        for metric in ("abs_logodds", "abs_normalised_gap"):
            row = f.loc[(f"shapes.{family}", metric)]
            assert row.ci_low <= row.value <= row.ci_high and row.n == 8 * 32
    pairs = f.loc[("shapes.sentence_pairs", "pro_preferred")]
    assert 0 <= pairs.ci_low <= pairs.value <= pairs.ci_high <= 100
    assert "shapes" in interp.measure.evaluate.DEFAULT_SUITES
    detail = report.details["shapes.deep"].frame
    assert report.value("shapes.deep", "abs_logodds") == pytest.approx(detail.logodds.abs().mean())
