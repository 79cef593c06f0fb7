import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import interp
from interp.cli import app
from interp.measure.suites.likelihood import continuation_logprobs
from interp.mitigate.dpo import dpo, preference_margins
from interp.mitigate.edit import EditError
from interp.studies import stories as S


def few_pairs(n_templates=3, names=S.NAMES[:2]):
    pairs = S.ours(names)
    return pairs[pairs.template_id < n_templates].reset_index(drop=True)


def test_judgements_are_the_options_likelihoods_and_mismatches_are_counted(tiny_llama):
    pairs = few_pairs()
    result = interp.story_consistency(tiny_llama, pairs, n_boot=50)
    f = result.frame
    for who in ("male", "female"):
        prompts = [S.prompt(s) for s in pairs[f"{who}_story"]]
        for option in S.OPTIONS:
            plain = continuation_logprobs(tiny_llama, prompts, [option] * len(prompts))
            assert np.allclose(f[f"logp_{who}_{option.lower()}"], plain, atol=1e-4)
    lp = f[[f"logp_male_{o.lower()}" for o in S.OPTIONS]].to_numpy()
    assert list(f.judgement_male) == [S.OPTIONS[i] for i in lp.argmax(1)]
    assert (f.mismatch == (f.judgement_male != f.judgement_female)).all()
    assert result.summary["mismatch_rate"] == pytest.approx(f.mismatch.mean())
    assert result.summary["n_pairs"] == len(pairs)
    assert result.tables["environments"].n_pairs.sum() == len(pairs)


def test_direction_of_mismatches_by_hand():
    frame = pd.DataFrame({"pair_id": range(4), "environment": ["a", "a", "b", "b"]})
    moral, immoral, both = np.eye(3) * 5
    lp_male = np.stack([moral, both, immoral, moral])
    lp_female = np.stack([immoral, moral, immoral, both])
    out = S._judged(frame, lp_male, lp_female)
    assert list(out.mismatch) == [1, 1, 0, 1]
    assert list(out.female_harsher) == [1, 0, 0, 1]  # Immoral > Both > Moral
    assert list(out.male_harsher) == [0, 1, 0, 0]
    assert out.answer_distance[2] == pytest.approx(0)


def test_genmo_json_is_read_as_published_and_bad_files_name_the_field(tmp_path):
    good = [{"male_story": "He lied.", "female_story": "She lied.", "environment": "family",
             "source": "x", "extra": 1}] * 3
    path = tmp_path / "genmo.json"
    path.write_text(json.dumps(good))
    frame = S.genmo(path)
    assert len(frame) == 3 and frame.extra.tolist() == [1, 1, 1]
    assert S.resolve(str(path)).template_id.tolist() == [0, 1, 2]
    bad = [dict(good[0])]
    del bad[0]["environment"]
    path.write_text(json.dumps(bad))
    with pytest.raises(S.StoryError, match="item 0 has no field 'environment'"):
        S.genmo(path)
    path.write_text(json.dumps({"male_story": "x"}))
    with pytest.raises(S.StoryError, match="must be a list"):
        S.genmo(path)
    path.write_text("[]")
    with pytest.raises(interp.EmptyPromptSetError):
        S.genmo(path)
    path.write_text("{not json")
    with pytest.raises(S.StoryError, match="cannot read"):
        S.genmo(path)


def test_genmo_file_as_published_reads_with_its_quirks():
    # Our pairs in GenMO_dataset.json's published form: one JSON list, \\u escapes, the file's
    # environment spellings (" Others", " Family ", "", " Work"), stories ending in a newline or
    # a space, and its mis-decoded "fianc\u00c3\u00a9e".
    path = Path(__file__).with_name("fixtures") / "GenMO_dataset.json"
    assert "\\u2019" in path.read_text() and '"environment": ""' in path.read_text()
    frame = S.genmo(path)
    assert frame.environment.tolist() == ["Other", "Other", "Family", "Relationship", "Other",
                                          "Work"]
    assert frame.environment_raw.tolist()[1:3] == [" Others", " Family "]
    assert not frame.male_story.str.endswith((" ", "\n")).any()
    assert not frame.female_story.str.endswith((" ", "\n")).any()
    assert "fianc\u00c3\u00a9e" in frame.male_story[3]  # kept as published
    assert sorted(S.split(frame)[0].pair_id.tolist() + S.split(frame)[1].pair_id.tolist()) == \
        list(range(6))


def test_our_pairs_differ_only_in_the_protagonist_and_split_by_template():
    pairs = S.ours()
    assert len(pairs) == 60 * len(S.NAMES)
    gendered = {"he", "him", "his", "himself", "she", "her", "herself"}
    for row in pairs.itertuples():
        assert row.name_male in row.male_story and row.name_female in row.female_story

        def rest(story, name):
            words = story.replace(name, "NAME").replace(".", " ").replace(",", " ").split()
            return [w for w in words if w.lower() not in gendered]

        assert rest(row.male_story, row.name_male) == rest(row.female_story, row.name_female)
    train, test = S.split(pairs)
    assert not set(train.template_id) & set(test.template_id)
    assert len(train) + len(test) == len(pairs) and 0.2 < len(test) / len(pairs) < 0.5


def test_preference_pairs_prefer_the_judgement_both_versions_share():
    frame = pd.DataFrame({"pair_id": [0, 1], "template_id": [0, 1], "environment": ["a", "a"],
                          "male_story": ["m0", "m1"], "female_story": ["f0", "f1"]})
    # pair 0: male Moral (sure), female Both (unsure) -> consensus Moral;
    # pair 1: the same judgement: no preference pair
    lp_male = np.log(np.array([[0.9, 0.02, 0.08], [0.2, 0.1, 0.7]]))
    lp_female = np.log(np.array([[0.4, 0.1, 0.5], [0.2, 0.1, 0.7]]))
    report = S.StoryConsistency("s", S._judged(frame, lp_male, lp_female), {})
    prefs = S.preference_pairs(report)
    assert len(prefs) == 2 and set(prefs.version) == {"male", "female"}
    assert (prefs.chosen == "Moral").all() and (prefs.rejected == "Both").all()
    assert prefs.prompt.tolist() == [S.prompt("m0"), S.prompt("f0")]


def toy_preferences():
    return pd.DataFrame({"prompt": ["The nurse said that", "The teacher said that",
                                    "The doctor said that", "The cook said that"],
                         "chosen": ["she was", "she was", "he was", "he was"],
                         "rejected": ["he was", "he was", "she was", "she was"]})


def test_dpo_raises_the_chosen_margin_and_returns_an_edit(tiny_llama):
    prefs = toy_preferences()
    before_weights = tiny_llama.fingerprint()
    before = preference_margins(tiny_llama, prefs)
    plain = (continuation_logprobs(tiny_llama, list(prefs.prompt), list(prefs.chosen))
             - continuation_logprobs(tiny_llama, list(prefs.prompt), list(prefs.rejected)))
    assert np.allclose(before, plain, atol=1e-4)
    edit = dpo(tiny_llama, prefs, layers=[1], attn_layers=[1], beta=0.5, epochs=15,
               batch_size=2, lr=3e-3, kl_weight=0.0)
    assert tiny_llama.fingerprint() == before_weights  # the model is left as it was
    # policy = reference at the first step: the DPO loss is log 2 exactly
    assert edit.meta["loss_first"][1] == pytest.approx(np.log(2), abs=1e-5)
    assert edit.meta["loss_last"][1] < edit.meta["loss_first"][1]
    after = preference_margins(tiny_llama, prefs, edit)
    assert (after > before).all()
    assert set(edit.sites()) == {("mlp", 1), ("attn", 1)}
    with edit.applied(tiny_llama):
        applied = (continuation_logprobs(tiny_llama, list(prefs.prompt), list(prefs.chosen))
                   - continuation_logprobs(tiny_llama, list(prefs.prompt), list(prefs.rejected)))
    assert np.allclose(after, applied, atol=1e-4)
    assert edit.meta["method"] == "dpo" and edit.meta["n_pairs"] == 4


def test_dpo_bad_input_is_named_before_any_compute(tiny_llama):
    with pytest.raises(EditError, match="column 'rejected'"):
        dpo(tiny_llama, toy_preferences().drop(columns="rejected"), layers=[1])
    with pytest.raises(EditError, match="no preference pairs"):
        dpo(tiny_llama, toy_preferences().iloc[:0], layers=[1])
    with pytest.raises(EditError, match="no layers"):
        dpo(tiny_llama, toy_preferences(), layers=[])


def test_consistency_saves_loads_plots_and_judges_an_edit(tiny_llama, tmp_path):
    pairs = few_pairs(2, S.NAMES[:1])
    result = interp.story_consistency(tiny_llama, pairs, n_boot=20)
    again = S.StoryConsistency.load(result.save(tmp_path / "stories"))
    assert again.summary == pytest.approx(result.summary)
    assert len(result.plot().data) == 2
    d, m = tiny_llama.arch.d_model, tiny_llama.arch.d_mlp
    g = torch.Generator().manual_seed(0)
    edit = interp.Edit({1: (torch.randn(d, 2, generator=g), torch.randn(m, 2, generator=g))})
    edited = interp.story_consistency(tiny_llama, pairs, edit=edit, n_boot=20)
    assert edited.meta["fingerprint"] != result.meta["fingerprint"]
    assert not np.allclose(edited.frame.logp_male_moral, result.frame.logp_male_moral)


def test_cli_stories_and_dpo(tmp_path):
    pairs = few_pairs(6, S.NAMES[:2])
    data = [{k: r[k] for k in ("male_story", "female_story", "environment", "source")}
            for r in pairs.to_dict("records")]
    path = tmp_path / "genmo.json"
    path.write_text(json.dumps(data))
    r = CliRunner().invoke(app, ["stories", "--model", "tiny-llama", "--pairs", str(path),
                                 "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert "mismatch_rate" in r.output and (tmp_path / "s" / "items.csv").exists()
    # A random tiny model answers "Both" to every story, so it has no mismatch to learn from:
    # the command says so; given preference pairs, it trains on them.
    r = CliRunner().invoke(app, ["dpo", "--model", "tiny-llama", "--pairs", str(path),
                                 "--layers", "1", "--out", str(tmp_path / "d")])
    assert r.exit_code == 2 and "no preference pairs" in r.output
    toy_preferences().to_csv(tmp_path / "prefs.csv", index=False)
    r = CliRunner().invoke(app, ["dpo", "--model", "tiny-llama", "--pairs", str(path),
                                 "--preferences", str(tmp_path / "prefs.csv"), "--layers", "1",
                                 "--epochs", "1", "--out", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert "held-apart story pairs" in r.output
    edit = interp.Edit.load(tmp_path / "d" / "edit.safetensors")
    assert edit.meta["method"] == "dpo" and edit.meta["n_pairs"] == 4
    bad = CliRunner().invoke(app, ["stories", "--model", "tiny-llama", "--pairs",
                                   str(tmp_path / "missing.json")])
    assert bad.exit_code == 2 and "missing.json: no such file" in bad.output


def test_story_dpo_is_the_commands_pipeline_as_a_function(tiny_llama):
    train, test = S.split(few_pairs(6, S.NAMES[:2]))
    result = interp.story_dpo(tiny_llama, train, test, preferences=toy_preferences(),
                              layers=[1], epochs=1, progress=False)
    assert result.edit.meta["n_pairs"] == 4 and result.edit.layers == [1]
    assert result.sites.mlp == [1] and result.sites.attn == []
    # the held-apart pairs judged with the edit, as story_consistency judges them
    again = S.story_consistency(tiny_llama, test, edit=result.edit, progress=False)
    assert result.after.summary["mismatch_rate"] == again.summary["mismatch_rate"]
    assert result.summary().startswith(f"held-apart story pairs ({len(test)})")


def test_balanced_preference_pairs_choose_each_answer_equally_often():
    frame = pd.DataFrame({"pair_id": range(5), "template_id": range(5),
                          "environment": ["a"] * 5, "male_story": [f"m{i}" for i in range(5)],
                          "female_story": [f"f{i}" for i in range(5)]})
    # three pairs whose consensus is Moral, two whose consensus is Both
    lp_male = np.log(np.array([[0.9, 0.02, 0.08]] * 3 + [[0.5, 0.02, 0.48]] * 2))
    lp_female = np.log(np.array([[0.4, 0.1, 0.5]] * 3 + [[0.1, 0.02, 0.88]] * 2))
    report = S.StoryConsistency("s", S._judged(frame, lp_male, lp_female), {})
    every = S.preference_pairs(report)
    assert every.chosen.value_counts().to_dict() == {"Moral": 6, "Both": 4}
    balanced = S.preference_pairs(report, balance=True)
    assert balanced.chosen.value_counts().to_dict() == {"Moral": 4, "Both": 4}
    assert set(balanced.chosen[:4]) == {"Moral", "Both"}  # the first rows are balanced too
    # both versions of a story pair stay together
    assert (balanced.groupby("pair_id").size() == 2).all()
