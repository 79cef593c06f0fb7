"""Contrasts: a bias axis as data. Built-ins load, files round-trip, bad files are refused in one
line, and a contrast's scores are the model's log-probabilities of its continuations."""

import json

import numpy as np
import pytest
import torch

from interp.measure import prompts as P
from interp.measure.bias import measure
from interp.measure.contrast import Contrast, ContrastError, contrast, contrasts
from interp.studies.audit_items import FAMILIES, FORMS


def test_the_built_ins_load_and_gender_is_the_default_everywhere_else_uses():
    assert contrasts()[0] == "gender"
    assert {"misgendering", "religion", "race"} <= set(contrasts())
    for name in contrasts():
        c = contrast(name)
        assert c.name == name and c.items("train").shape[0] > 0
    g = contrast()
    assert g.goal == "balance" and g.forms("subject") == {"male": "he", "female": "she"}
    assert g.forms("possessive") == {"male": "his", "female": "her"}
    assert [s.word for s in g.subjects] == list(P.occupations()["occupation"])
    assert len(g.contexts) == len(P.TEMPLATES) + len(P.CONTEXT_TEMPLATES)


def test_misgendering_holds_tangos_families_and_declares_each_in_turn():
    m = contrast("misgendering")
    assert {g: tuple(f[s] for s in FORMS) for g, f in m.groups.items()} == FAMILIES
    items = m.items("test")
    assert set(items["declared"]) == set(FAMILIES) and set(items["split"]) == {"test"}
    row = items[(items.declared == "xe") & (items.slot == "acc")].iloc[0]
    assert "xe/xem" in row.text and row.subject in row.text and "{" not in row.text


@pytest.mark.parametrize("suffix", [".toml", ".json"])
@pytest.mark.parametrize("name", ["gender", "misgendering", "religion", "race"])
def test_a_saved_contrast_reads_back_the_same(name, suffix, tmp_path):
    c = contrast(name)
    assert contrast(str(c.save(tmp_path / f"c{suffix}"))) == c


def _file(tmp_path, d, suffix=".json"):
    p = tmp_path / f"bad{suffix}"
    p.write_text(json.dumps(d) if suffix == ".json" else d)
    return str(p)


GOOD = {"name": "t", "goal": "balance", "groups": {"a": "cats", "b": "dogs"},
        "subjects": [{"word": "owner", "split": "train"}],
        "contexts": ["The {subject} loves"]}


@pytest.mark.parametrize("change, says", [
    ({"groups": None}, "missing groups"),
    ({"groups": {"a": "cats"}}, "at least two groups"),
    ({"goal": "shrink"}, "unknown goal 'shrink'"),
    ({"contexts": ["The owner loves"]}, "has no {subject}"),
    ({"contexts": [{"text": "The {subject} saw", "slot": "object"}]}, "slot 'object'"),
    ({"subjects": [{"word": "owner", "split": "dev"}]}, "split 'dev'"),
    ({"subjects": [{"word": "owner", "split": "train", "group": "c"}]}, "not one of the groups"),
    ({"groups": {"a": {"x": "cats"}, "b": {"y": "dogs"}}}, "different slots"),
    ({"contexts": ["{subject} uses {declared.default}"]}, "goal is 'balance'"),
    ({"colour": "red"}, "unknown key(s) colour"),
])
def test_a_bad_contrast_is_refused_in_one_line(change, says, tmp_path):
    d = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ContrastError) as e:
        contrast(_file(tmp_path, d))
    assert says in str(e.value) and "\n" not in str(e.value)
    assert str(tmp_path) in str(e.value)  # it names the file


def test_a_file_that_is_not_toml_names_itself(tmp_path):
    with pytest.raises(ContrastError, match="not valid TOML"):
        contrast(_file(tmp_path, "name = ", ".toml"))
    with pytest.raises(ContrastError, match="unknown contrast 'nope'"):
        contrast("nope")


def test_gender_scores_equal_the_bias_measure(tiny_llama):
    """The contrast's lean (summed continuation log-probabilities) equals the log-odds the bias
    report computes from the next-token distribution, on every slot."""
    g = contrast("gender")
    items = g.items("train")
    items = items[items.subject.isin(sorted(set(items.subject))[:3])]
    scored = g.logprobs(tiny_llama, items)
    ps = P.contexts(tiny_llama, "train")
    ref = measure(tiny_llama, ps.filter(lambda p: p.subject in set(items.subject)))
    ref = ref.set_index("text")["logodds"]
    np.testing.assert_allclose(g.lean(scored), ref.loc[scored["text"]].to_numpy(), atol=1e-4)


def test_multi_token_forms_are_summed_log_probabilities(tiny_llama):
    c = Contrast.from_dict({**GOOD, "groups": {"a": "cats and mice", "b": "dogs"}})
    scored = c.logprobs(tiny_llama, c.items("train"))
    tok = tiny_llama.tokenizer
    ctx = tok("The owner loves", add_special_tokens=False)["input_ids"]
    cont = tok(" cats and mice", add_special_tokens=False)["input_ids"]
    assert len(cont) > 1
    from interp.model.tokens import start_ids

    ids = torch.tensor([start_ids(tok) + ctx + cont])
    with torch.no_grad():
        lp = torch.log_softmax(tiny_llama.hf(ids).logits.double(), -1)[0]
    first = len(ids[0]) - len(cont)
    want = sum(lp[first - 1 + i, t].item() for i, t in enumerate(cont))
    assert scored["a"].iloc[0] == pytest.approx(want, abs=1e-4)


def test_follow_leans_towards_the_declared_group():
    m = contrast("misgendering")
    items = m.items("train").iloc[:2].copy()
    for g in m.group_names:
        items[g] = -5.0
    items.loc[items.index[0], items.declared.iloc[0]] = 0.0  # the declared family likelier
    assert list(items.declared) == ["he", "she"]
    # log p(declared) − log Σ p(others): 0 − log(5 e⁻⁵), then −5 − log(5 e⁻⁵) = −log 5
    np.testing.assert_allclose(m.lean(items), [5 - np.log(5), -np.log(5)])



def test_the_summary_counts_a_declared_group_missed(tiny_llama):
    m = contrast("misgendering")
    items = m.items("test")
    items = items[items.subject == items.subject.iloc[0]]
    scored = m.logprobs(tiny_llama, items)
    table = m.summary(scored)
    assert list(table.index) == list(m.group_names)
    top = scored[list(m.group_names)].to_numpy().argmax(1)
    missed = np.array(m.group_names)[top] != scored["declared"].to_numpy()
    for g in m.group_names:
        assert table.loc[g, "rate"] == pytest.approx(missed[scored.declared == g].mean())
        assert table.loc[g, "items"] == len(m.contexts)


def test_bias_takes_a_contrast_and_its_report_saves_plots_and_reloads(tiny_llama, tmp_path):
    import interp
    from interp.measure.contrast import ContrastReport

    r = interp.bias(tiny_llama, contrast="religion")
    c = contrast("religion")
    assert isinstance(r, ContrastReport) and len(r.frame) == len(c.items(None))
    assert set(r.frame["split"]) == {"train", "test"}
    np.testing.assert_allclose(r.frame["lean"], c.lean(r.frame))
    s = r.summary()
    assert s.loc[("train", "muslim"), "items"] == (c.items("train").group == "muslim").sum()
    back = ContrastReport.load(r.save(tmp_path / "r"))
    np.testing.assert_array_equal(back.frame[list(c.group_names)].to_numpy(),
                                  r.frame[list(c.group_names)].to_numpy())
    assert back.summary().equals(s) and back.contrast == c
    assert len(r.plot().data) == 2  # one bar series per part
    with pytest.raises(interp.InterpError, match="not both"):
        interp.bias(tiny_llama, P.professions(tiny_llama, "train"), contrast="race")


def test_the_bias_command_measures_a_contrast_file(tmp_path, capsys):
    from interp.cli import run

    small = {"name": "declared", "goal": "follow",
             "groups": {"he": {"nom": "he"}, "she": {"nom": "she"}, "fae": {"nom": "fae"}},
             "subjects": [{"word": "Alex", "split": "train"}, {"word": "Quinn", "split": "test"}],
             "contexts": [{"text": "{subject} goes by {declared.nom}. Then", "slot": "nom"}]}
    path = contrast(_file(tmp_path, small)).save(tmp_path / "declared.toml")
    assert run(["bias", "-m", "tiny-llama", "--contrast", str(path),
                "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "declared on tiny-llama (follow)" in out and "fae" in out
    assert (tmp_path / "m" / "items.csv").is_file() and (tmp_path / "m" / "summary.csv").is_file()
