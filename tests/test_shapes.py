"""The held-out sentence shapes: their data, how frames are filled, and that the scores equal a
plain one-prompt-at-a-time reference on the tiny random Llama."""

import numpy as np
import pytest
import torch

import interp
from interp import prompts as P
from interp.measure import shapes as S
from interp.measure.evaluate import evaluate


def test_every_family_has_frames_of_its_own_shape():
    table = S.frames()
    assert tuple(table.family.unique()) == S.FAMILIES
    for family, group in table.groupby("family"):
        assert len(group) >= (16 if family in S.COREFERENCE else 30), family
        assert group.frame.is_unique
        for frame in group.frame:
            if family in S.COREFERENCE:
                assert frame.count("{a}") == frame.count("{b}") == frame.count("{pronoun}") == 1
                assert frame.index("{a}") < frame.index("{b}") < frame.index("{pronoun}")
            else:
                assert frame.count("{occupation}") == 1
                assert ("{pronoun}" in frame) == (family == "sentence_pairs")
    assert set(table.slot) == set(S.SLOT_PRONOUNS)
    coref = table[table.family.isin(list(S.COREFERENCE))]
    assert (coref.type == coref.family.map(S.COREFERENCE)).all()
    assert set(coref[coref.type == 2].referent) == {"b"}  # the object: syntax decides
    assert set(coref[coref.type == 1].referent) == {"a", "b"}


def test_validation_and_test_parts_split_every_family_in_half():
    whole = S.frames()
    val, test = S.frames(part="validation"), S.frames(part="test")
    assert not set(val.frame) & set(test.frame)
    assert len(val) + len(test) == len(whole)
    for family in S.FAMILIES:
        assert len(S.frames(family, "validation")) == len(S.frames(family, "test"))
        items = S.items(family, per_frame=2, part="test")
        assert set(items.part) == {"test"} and set(items.frame) <= set(test.frame)
    # type 1's referents are on both sides
    assert set(S.frames("coreference_type1", "test").referent) == {"a", "b"}
    with pytest.raises(interp.InterpError, match="unknown part 'dev'"):
        S.frames(part="dev")


def test_no_frame_is_a_fitting_template():
    fitted = {t.format("{occupation}") for t in (*P.TEMPLATES, *interp.EDIT_TEMPLATES,
                                                 *interp.LAST_TOKEN_TEMPLATES,
                                                 *P.CONTEXT_TEMPLATES)}
    table = S.frames()
    frames = {f.replace("{a}", "{occupation}").replace("{b}", "the {occupation}")
              for f in table.frame}
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
        for metric in ("abs_logodds", "abs_normalised_gap", "stereotype_following",
                       "stereotype_correlation"):
            row = f.loc[(f"shapes.{family}", metric)]
            assert row.ci_low <= row.value <= row.ci_high and row.n == 16 * 16  # the test part
    for suite, metric in (("sentence_pairs", "pro_preferred"),
                          ("coreference_type1", "pairs_pro_preferred"),
                          ("coreference_type2", "syntax_accuracy")):
        row = f.loc[(f"shapes.{suite}", metric)]
        assert 0 <= row.ci_low <= row.value <= row.ci_high <= 100
    syntax = report.details["shapes.coreference_type2"].tables["syntax"]
    assert f.loc[("shapes.coreference_type2", "syntax_accuracy")].n == len(syntax) == 4 * 8 * 16
    assert f.loc[("shapes.coreference_type2", "syntax_accuracy_pro")].n == len(syntax) // 2
    assert "shapes" in interp.measure.evaluate.DEFAULT_SUITES
    detail = report.details["shapes.deep"].frame
    assert report.value("shapes.deep", "abs_logodds") == pytest.approx(detail.logodds.abs().mean())


def test_coreference_items_pit_a_male_against_a_female_stereotype():
    frame = S.items("coreference_type1", per_frame=4)
    test = P.occupations(split="test").set_index("occupation").stereotypical
    assert len(frame) == 4 * len(S.frames("coreference_type1"))
    for row in frame.itertuples():
        assert {row.occupation, row.other} == {row.a, row.b}
        assert row.occupation == (row.a if row.referent == "a" else row.b)
        assert test[row.occupation] * test[row.other] < 0  # one each way
        assert row.stereotypical == test[row.occupation]
        assert row.male.startswith(row.text + " ") and row.female.startswith(row.text + " ")
        diff = [(m, f) for m, f in zip(row.male.split(), row.female.split()) if m != f]
        assert diff == [("he", "she")]
    # the coin puts male- and female-stereotyped referents in about equal numbers
    assert 0.3 < (frame.stereotypical > 0).mean() < 0.7


def test_syntax_items_state_the_genders_and_expect_the_referents():
    items = S.items("coreference_type2", per_frame=2).head(3)
    syntax = S.syntax_items(items)
    assert len(syntax) == 4 * len(items)
    for k, (_, item) in enumerate(items.iterrows()):
        group = syntax.iloc[4 * k: 4 * k + 4]
        assert sorted(group.expected) == ["female", "female", "male", "male"]
        for row in group.itertuples():
            lead, rest = row.text.split(". ", 1)
            assert rest == item.text
            other = "woman" if row.expected == "male" else "man"
            noun = "man" if row.expected == "male" else "woman"
            assert f"the {item.b} is a {noun}" in lead.lower()
            assert f"the {item.a} is a {other}" in lead.lower()
            assert row.pro == ((row.expected == "male") == (item.stereotypical > 0))


def test_syntax_accuracy_counts_the_expected_pronoun_winning(tiny_llama):
    syntax = S.syntax_items(S.items("coreference_type2", per_frame=1).head(4))
    scored = S.score_syntax(tiny_llama, syntax, progress=False)
    for row in scored.itertuples():
        lp = _next_logprobs(tiny_llama, row.text)
        him, her = (tiny_llama.tokenizer(w, add_special_tokens=False)["input_ids"][0]
                    for w in S.SLOT_PRONOUNS["object"])
        male_wins = bool(lp[him] > lp[her])
        assert row.correct == float(male_wins == (row.expected == "male"))
