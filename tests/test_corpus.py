import gzip
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from interp.cli import app
from interp.studies import corpus as C

OCC = ["nurse", "police officer", "officer", "engineer"]
DOCS = ["The nurse said she was tired. The police officer and his son left!",
        "An engineer met a woman. Her sister is an engineer too.\n\nThe officer smiled.",
        "Nothing here.", "The nurse and the engineer: he and she."]


def by_hand(docs, occupations):
    """Sentence windows, counted the slow way: per sentence, per mention, its gender terms."""
    terms = C.gender_terms()
    out = {o: [0, 0, 0] for o in occupations}
    for doc in docs:
        for sentence in C.SENTENCE.split(doc.lower()):
            words = C.WORD.findall(sentence)
            f = sum(terms.get(w) == "female" for w in words)
            m = sum(terms.get(w) == "male" for w in words)
            i = 0
            while i < len(words):
                for o in sorted(occupations, key=lambda o: -len(o.split())):
                    ws = o.split()
                    if words[i: i + len(ws)] == ws:
                        out[o] = [out[o][0] + 1, out[o][1] + f, out[o][2] + m]
                        i += len(ws) - 1
                        break
                i += 1
    return out


def as_dict(result):
    return {r.occupation: [r.mentions, r.female, r.male] for r in result.frame.itertuples()}


def write_shards(tmp_path):
    (tmp_path / "a.txt").write_text(DOCS[0])
    with open(tmp_path / "b.jsonl", "w") as f:
        for d in DOCS[1:3]:
            f.write(json.dumps({"text": d, "id": 1}) + "\n")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": DOCS[3]}) + "\n")
    return [tmp_path / "a.txt", tmp_path / "b.jsonl", tmp_path / "c.jsonl.gz"]


def test_sentence_counts_equal_a_count_by_hand_over_every_shard_format(tmp_path):
    shards = write_shards(tmp_path)
    result = C.count_corpus(shards, occupations=OCC)
    assert as_dict(result) == by_hand(DOCS, OCC)
    assert result.meta["documents"] == 4 and result.meta["n_shards"] == 3
    row = result.frame.set_index("occupation").loc["engineer"]
    assert row.female_share == pytest.approx(row.female / (row.female + row.male))
    # "police officer" is one mention of that occupation, not also one of "officer"
    assert as_dict(result)["officer"][0] == 1
    from datasets import Dataset

    Dataset.from_dict({"text": DOCS}).save_to_disk(str(tmp_path / "hf"))
    assert as_dict(C.count_corpus([tmp_path / "hf"], occupations=OCC)) == as_dict(result)
    bom = tmp_path / "bom.jsonl"  # a JSONL shard that opens with a UTF-8 byte-order mark
    bom.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps({"text": d}) + "\n"
                                              for d in DOCS).encode())
    assert as_dict(C.count_corpus([bom], occupations=OCC)) == as_dict(result)


def test_word_windows_count_terms_within_n_words():
    counter = C.Counter(OCC, window=2)
    counts = counter.empty()
    counter.add(counts, "she the nurse a b c he. The police officer and his son left")
    got = dict(zip(OCC, counts.tolist()))
    assert got["nurse"] == [1, 1, 0]  # "she" two words before; "he" four words after
    assert got["police officer"] == [1, 0, 2]  # "he" and "his" within two words of either end
    with pytest.raises(C.InterpError, match="window"):
        C.Counter(OCC, window=0)


def test_a_killed_count_resumes_with_finished_shards_skipped(tmp_path):
    shards = write_shards(tmp_path)
    out = tmp_path / "run"
    first = C.count_corpus(shards[:2], occupations=OCC, out=out)  # "killed" after two shards
    assert first.meta["resumed"] == 0
    again = C.count_corpus(shards, occupations=OCC, out=out)
    assert again.meta["resumed"] == 2
    assert as_dict(again) == as_dict(C.count_corpus(shards, occupations=OCC))
    shards[0].write_text(DOCS[0] + " The nurse.")  # a changed shard is counted again
    changed = C.count_corpus(shards, occupations=OCC, out=out)
    assert changed.meta["resumed"] == 2
    assert as_dict(changed)["nurse"][0] == as_dict(again)["nurse"][0] + 1


def test_bad_shards_are_named_and_skipped_only_when_asked(tmp_path):
    shards = write_shards(tmp_path)
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(C.CorpusError, match="bad.jsonl.gz.*--skip-bad"):
        C.count_corpus(shards + [bad], occupations=OCC)
    result = C.count_corpus(shards + [bad], occupations=OCC, skip_bad=True)
    assert [s["shard"] for s in result.meta["skipped"]] == [str(bad)]
    assert as_dict(result) == by_hand(DOCS, OCC)
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(C.CorpusError, match="line 2 has no 'text' field"):
        C.count_corpus([tmp_path / "d.jsonl"], occupations=OCC)
    with pytest.raises(C.CorpusError, match="no such corpus"):
        C.count_corpus([tmp_path / "missing.txt"])


def test_cli_corpus_count(tmp_path):
    write_shards(tmp_path)
    out = tmp_path / "counts.csv"
    r = CliRunner().invoke(app, ["corpus", "count", str(tmp_path), "--out", str(out)])
    assert r.exit_code == 0, r.output
    saved = C.CorpusCounts.load(out)
    assert saved.meta["documents"] == 4
    nurse = saved.frame.set_index("occupation").loc["nurse"]
    assert nurse.mentions == 2 and np.isfinite(nurse.female_share)
    bad = CliRunner().invoke(app, ["corpus", "count", str(tmp_path / "missing")])
    assert bad.exit_code == 2 and "no such corpus" in bad.output
    sample = tmp_path / "sample.csv"
    r = CliRunner().invoke(app, ["corpus", "count", "sample", "--out", str(sample)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["corpus", "compare", str(sample), "--model", "tiny-llama",
                                 "--out", str(tmp_path / "cmp")])
    assert r.exit_code == 0, r.output
    assert "slope" in r.output and (tmp_path / "cmp" / "occupations.csv").exists()


def test_compare_correlates_corpus_and_model_shares(tiny_llama, tmp_path):
    import pandas as pd

    from interp.measure import prompts as P
    from interp.measure.bias import measure
    from interp.studies.corpus_compare import CorpusComparison, compare_corpus

    occ = ["nurse", "engineer", "teacher", "doctor", "pilot"]
    frame = pd.DataFrame({"occupation": occ, "mentions": [10, 8, 6, 5, 2],
                          "female": [9, 1, 4, 2, 1], "male": [1, 7, 2, 3, 1]})
    frame["female_share"] = frame.female / (frame.female + frame.male)
    counts = C.CorpusCounts(frame, {"documents": 3})
    templates = ["The {} said that", "The {} smiled because"]
    result = compare_corpus(tiny_llama, counts, min_mentions=5, templates=templates, n_boot=50)
    f = result.frame.set_index("occupation")
    assert sorted(f.index) == sorted(occ[:4])  # "pilot" has too few mentions
    plain = measure(tiny_llama, P.from_templates(tiny_llama, templates, [{"subject": "nurse"}]))
    share = (plain.p_female / (plain.p_female + plain.p_male)).mean()
    assert f.loc["nurse", "model_share"] == pytest.approx(share)
    slope, intercept = np.polyfit(f.corpus_share, f.model_share, 1)
    assert result.summary["slope"] == pytest.approx(slope)
    assert result.summary["intercept"] == pytest.approx(intercept)
    assert result.summary["pearson"] == pytest.approx(np.corrcoef(f.corpus_share,
                                                                  f.model_share)[0, 1])
    again = CorpusComparison.load(result.save(tmp_path / "cmp"))
    assert again.summary == pytest.approx(result.summary)
    assert len(result.plot().data) == 3
    with pytest.raises(C.InterpError, match="at least 3"):
        compare_corpus(tiny_llama, counts, min_mentions=9)


def test_the_shipped_sample_corpus_counts_its_generators_shares():
    result = C.count_corpus(["sample"])
    assert result.meta["n_shards"] == 4 and result.meta["documents"] > 500
    f = result.frame.set_index("occupation")
    # the generator draws female terms more often for female-stereotyped occupations
    assert f.loc["nurse", "female_share"] > 0.5 > f.loc["carpenter", "female_share"]
