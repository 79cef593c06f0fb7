import json

import pytest

import interp
from interp import prompts as P
from interp.measure.prompts import Dropped, PromptSet, tokenize_prompt


def test_occupation_table_and_split():
    every = P.occupations(neutral_only=False, single_word=False)
    assert len(every) >= 150
    assert {"occupation", "definitional", "stereotypical", "split"} <= set(every.columns)
    default = P.occupations()
    assert default["gender_neutral"].all() and default["single_word"].all()
    assert (default["definitional"].abs() <= P.GENDER_NEUTRAL_MAX).all()
    train, test = P.occupations(split="train"), P.occupations(split="test")
    assert set(train.occupation).isdisjoint(test.occupation)
    assert set(train.occupation) | set(test.occupation) == set(default.occupation)
    assert 0.15 < len(test) / len(default) < 0.35
    # fixed: the same call gives the same split, another seed another one
    assert list(P.occupations(split="test").occupation) == list(test.occupation)
    assert list(P.occupations(split="test", seed=1).occupation) != list(test.occupation)
    with pytest.raises(interp.InterpError, match="split must be"):
        P.occupations(split="dev")


def test_templates_are_valid_and_many():
    assert len(P.TEMPLATES) >= 15
    for t in P.TEMPLATES:
        P.check_template(t)


@pytest.mark.parametrize("bad, message", [
    ("The nurse said that", "no '{}' slot"),
    ("The {} told the {} that", "2 '{}' slots"),
    ("The {} said that ", "ends with whitespace"),
])
def test_bad_templates_are_clear_errors(tokenizer, bad, message):
    with pytest.raises(interp.TemplateError, match=message):
        P.from_templates(tokenizer, [bad], ["nurse"])


def test_every_subject_span_decodes_to_the_subject(tokenizer):
    ps = P.professions(tokenizer, None, single_word=False)
    assert len(ps) > 1000 and not ps.dropped
    multi = 0
    for p in ps:
        a, b = p.subject_span
        assert "".join(p.tokens[a:b]).strip() == p.subject
        assert p.tokens == tuple(tokenizer.decode([i]) for i in p.input_ids)
        multi += (b - a) > 1
    assert multi > 100  # multi-token occupations are really exercised


def test_span_of_a_multi_token_occupation(tokenizer):
    p = tokenize_prompt(tokenizer, "The paralegal said that", "paralegal")
    assert p.tokens[p.subject_span[0]:p.subject_span[1]] == (" par", "ale", "gal")
    assert (p.subject_span, p.subject_last, p.last) == ((1, 4), 3, 5)
    two = tokenize_prompt(tokenizer, "The cab driver said that", "cab driver")
    assert "".join(two.tokens[slice(*two.subject_span)]) == " cab driver"


def test_subject_at_the_start_of_the_text(tokenizer):
    p = tokenize_prompt(tokenizer, "Nurses said that", "Nurses")
    assert p.subject_span[0] == 0
    assert "".join(p.tokens[slice(*p.subject_span)]) == "Nurses"


def test_prompts_that_do_not_tokenize_are_dropped_with_reasons(tokenizer):
    ps = P.from_records(tokenizer, [
        {"text": "The nurse said that", "subject": "nurse"},
        {"text": "The nurse said that", "subject": "urse"},
        {"text": "The nurse said that", "subject": "doctor"},
        {"text": "   ", "subject": "nurse"},
    ])
    assert len(ps) == 1
    reasons = sorted(d.reason for d in ps.dropped)
    assert reasons == ["empty text", "subject does not start and end on token boundaries",
                       "subject not found in the text"]
    assert "dropped 3" in ps.drop_summary() and "dropped 3" in repr(ps)


def test_empty_prompt_set_is_a_clear_error(tiny_llama):
    empty = PromptSet([], name="nothing", dropped=[Dropped("x", "y", "subject not found")])
    with pytest.raises(interp.EmptyPromptSetError, match="'nothing' is empty.*subject not found"):
        empty.require_nonempty()
    with pytest.raises(interp.EmptyPromptSetError):
        interp.bias(tiny_llama, empty)


def test_definitional_set(tokenizer):
    ps = P.definitional(tokenizer, templates=P.TEMPLATES[:2])
    assert {p.expected for p in ps} == {"male", "female"}
    king = [p for p in ps if p.subject == "king"]
    assert king and all(p.expected == "male" and p.definitional == 1.0 for p in king)


def test_jsonl_round_trip_and_errors(tmp_path, tokenizer):
    ps = P.professions(tokenizer, "test", templates=P.TEMPLATES[:3])
    path = tmp_path / "set.jsonl"
    ps.save_jsonl(path)
    again = P.from_jsonl(tokenizer, path)
    assert [p.text for p in again] == [p.text for p in ps]
    assert [p.subject_span for p in again] == [p.subject_span for p in ps]
    assert [p.stereotypical for p in again] == [p.stereotypical for p in ps]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "The nurse said that"}) + "\n")
    with pytest.raises(interp.InterpError, match="bad.jsonl:1 has no 'subject'"):
        P.from_jsonl(tokenizer, bad)
    bad.write_text("{not json\n")
    with pytest.raises(interp.InterpError, match="bad.jsonl:1 is not valid JSON"):
        P.from_jsonl(tokenizer, bad)


def test_to_frame_has_one_row_per_prompt(tokenizer):
    ps = P.professions(tokenizer, "train", templates=P.TEMPLATES[:2])
    df = ps.to_frame()
    assert len(df) == len(ps)
    assert {"prompt_id", "text", "subject", "subject_start", "subject_end", "split"} <= set(df)
    assert (df["split"] == "train").all()
