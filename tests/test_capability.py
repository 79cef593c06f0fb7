"""Capability suites: each number against a plain per-sequence computation on the HF module."""

import contextlib
import time

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from interp import capability as C
from interp import prompts as P

SHORT = C.heldout_text()[:700]  # ~140 tokens: full-vocabulary references stay small


def plain_logprobs(model, ids):
    """Next-token log-probs at every position of one unpadded sequence, via model.hf."""
    with torch.no_grad():
        return model.hf(torch.tensor([ids], device=model.device)).logits[0].float().log_softmax(-1)


@contextlib.contextmanager
def nudged(model):
    """`model` with one MLP weight nudged in place; restored afterwards, bit for bit."""
    w = model.arch.mlp_down_weight(model.bridge, 1)
    saved, before = w.detach().clone(), model.fingerprint()
    with torch.no_grad():
        w.add_(0.5 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)))
    try:
        yield model
    finally:
        with torch.no_grad():
            w.copy_(saved)
        assert model.fingerprint() == before


@pytest.mark.smoke
def test_perplexity_equals_plain_per_sequence_computation(tiny):
    # seq_len 100 leaves a short last window in the last batch: padding is exercised.
    result = C.perplexity(tiny, seq_len=100, batch_size=8)
    chunks = C.text_chunks(tiny, seq_len=100)
    assert len(chunks[-1]) < 100 and len(chunks) % 8 != 1
    nll = [-plain_logprobs(tiny, c)[:-1].gather(1, torch.tensor(c[1:])[:, None]).sum().item()
           for c in chunks]
    tokens = sum(len(c) - 1 for c in chunks)
    expected = np.exp(sum(nll) / tokens)
    assert result.value == pytest.approx(expected, rel=1e-4)
    assert result.ci_low <= result.value <= result.ci_high
    assert (result.n, result.extra["tokens"]) == (len(chunks), tokens)
    np.testing.assert_allclose(result.items["nll_sum"], nll, rtol=1e-4)


def test_batched_equals_unbatched(tiny_llama):
    one, many = (C.perplexity(tiny_llama, SHORT, seq_len=32, batch_size=b) for b in (1, 3))
    assert many.value == pytest.approx(one.value, rel=1e-5)
    frame = C.facts()[:40]
    one, many = (C.factual_recall(tiny_llama, frame, batch_size=b) for b in (1, 64))
    assert (one.items["predicted"] == many.items["predicted"]).all()
    np.testing.assert_allclose(one.items["logp_answer"], many.items["logp_answer"], atol=1e-5)


def test_factual_recall_equals_direct_argmax(tiny_llama):
    # Half the answers are the tiny model's own greedy token, so accuracy is neither 0 nor 1.
    frame = own_answers(tiny_llama, C.facts()[:60])
    result = C.factual_recall(tiny_llama, frame)
    logp = torch.stack([plain_logprobs(tiny_llama, tiny_llama.tokenizer(p)["input_ids"])[-1]
                        for p in result.items["prompt"]])
    answer = torch.tensor(result.items["answer_id"].tolist())
    correct = (logp.argmax(-1) == answer).float().numpy()
    assert 0 < correct.mean() < 1
    np.testing.assert_array_equal(result.items["correct"], correct)
    assert result.value == correct.mean()
    assert np.sign(result.items["margin"]).eq(2 * correct - 1).all()
    np.testing.assert_allclose(result.items["logp_answer"],
                               logp.gather(1, answer[:, None])[:, 0], atol=1e-5)
    assert result.extra["mean_logp_answer"] == pytest.approx(result.items["logp_answer"].mean())


def own_answers(model, frame):
    """`frame` with every other answer replaced by the model's greedy token, where that token
    round-trips through the tokenizer as one token."""
    from interp.model.forward import last_token_logprobs

    ids = [model.tokenizer(p)["input_ids"] for p in frame["prompt"]]
    top = last_token_logprobs(model, ids).argmax(-1).tolist()
    frame = frame.copy()
    for i in range(0, len(frame), 2):
        word = model.tokenizer.decode([top[i]])
        if model.tokenizer(word, add_special_tokens=False)["input_ids"] == [top[i]]:
            frame.loc[i, "answer"] = word
    return frame


def test_kl_is_zero_against_itself_and_grows_after_an_in_place_edit(tiny_llama):
    ref = C.next_token_logprobs(tiny_llama, seq_len=100, top_k=64)
    same = C.kl_divergence(tiny_llama, ref)
    assert abs(same.value) <= 1e-6 and same.extra["positions"] == sum(map(len, ref.chunks))
    with nudged(tiny_llama):
        edited = C.kl_divergence(tiny_llama, ref)
    assert edited.value > 1e-5 and edited.ci_low > 0
    assert abs(C.kl_divergence(tiny_llama, ref).value) <= 1e-6  # the restore was exact


def test_kl_against_a_model_is_exact_and_top_k_is_a_lower_bound(tiny_llama):
    unedited = interp.load_model("tiny-llama")  # same seed: tiny_llama's weights
    with nudged(tiny_llama) as perturbed:
        check_kl_methods(perturbed, unedited)


def check_kl_methods(perturbed, unedited):
    exact = C.kl_divergence(perturbed, unedited, SHORT, seq_len=32)
    chunks = C.text_chunks(unedited, SHORT, seq_len=32)
    plain = [torch.nn.functional.kl_div(plain_logprobs(perturbed, c), plain_logprobs(unedited, c),
                                        log_target=True, reduction="none").sum(-1) for c in chunks]
    assert exact.value == pytest.approx(torch.cat(plain).mean().item(), rel=1e-4)
    full = C.next_token_logprobs(unedited, SHORT, seq_len=32, top_k=10**6)  # whole vocabulary
    assert C.kl_divergence(perturbed, full).value == pytest.approx(exact.value, rel=1e-4)
    small = C.kl_divergence(perturbed, C.next_token_logprobs(unedited, SHORT, seq_len=32, top_k=8))
    assert 0 < small.value <= exact.value * (1 + 1e-5)


def test_kl_reference_rejects_another_text(tiny_llama):
    ref = C.next_token_logprobs(tiny_llama, SHORT, seq_len=32, top_k=4)
    with pytest.raises(interp.InterpError, match="other than the one"):
        C.kl_divergence(tiny_llama, ref, SHORT[:300])


def test_reference_save_load(tiny_llama, tmp_path):
    ref = C.next_token_logprobs(tiny_llama, SHORT, seq_len=32, top_k=16)
    back = C.NextTokenLogprobs.load(ref.save(tmp_path / "ref.pt"))
    assert back.chunks == ref.chunks and torch.equal(back.top_logprobs, ref.top_logprobs)
    assert C.kl_divergence(tiny_llama, back).value == pytest.approx(0, abs=1e-6)


def test_definitional_is_the_bias_reports_number(tiny_llama):
    result = C.definitional(tiny_llama)
    summary = interp.bias(tiny_llama, {"d": P.definitional(tiny_llama)}).summary().loc["d"]
    assert result.value == pytest.approx(summary["definitional_acc"])
    assert (result.ci_low, result.ci_high) == pytest.approx(
        (summary["definitional_acc_lo"], summary["definitional_acc_hi"]))
    assert result.n == len(P.definitional(tiny_llama))


def test_multi_token_answers_are_dropped_and_counted(tokenizer):
    frame = pd.DataFrame({"prompt": ["The capital of France is", "The capital of Iceland is"],
                          "answer": [" Paris", " Reykjavik"]})
    with pytest.warns(UserWarning, match="1 of 2 facts dropped"):
        kept = C.with_answer_ids(frame, tokenizer)
    assert kept["answer"].tolist() == [" Paris"] and len(kept.attrs["dropped"]) == 1


def test_bundled_facts_file_is_well_formed(tokenizer):
    frame = C.facts(tokenizer)
    assert len(frame) >= 120 and not frame.attrs["dropped"]
    assert frame["answer"].str.startswith(" ").all() and frame["prompt"].is_unique
    assert frame["category"].nunique() >= 10
    gendered = {" he", " she", " his", " her", " him", " man", " woman", " king", " queen"}
    assert not gendered & set(frame["answer"].str.lower())


def test_capability_report_runs_suites_and_round_trips(tiny_llama, tmp_path):
    ref = C.next_token_logprobs(tiny_llama, SHORT, seq_len=128, top_k=32)
    report = C.capability(tiny_llama, reference=ref, text=SHORT, n_boot=200)
    table = report.table()
    assert list(table.index) == ["facts", "perplexity", "definitional", "kl"]
    assert table.loc["kl", "value"] == pytest.approx(0, abs=1e-6)
    assert (table["ci_low"] <= table["value"] + 1e-12).all()
    back = C.CapabilityReport.load(report.save(tmp_path / "cap"))
    pd.testing.assert_frame_equal(back.table(), table)
    assert len(back.to_frame()) == len(report.to_frame())
    assert back["facts"].meta["fingerprint"] == tiny_llama.fingerprint()


def test_capability_rejects_bad_suites(tiny_llama):
    with pytest.raises(interp.InterpError, match="unknown capability suite"):
        C.capability(tiny_llama, suites=("facts", "mmlu"))
    with pytest.raises(interp.InterpError, match="needs a reference"):
        C.capability(tiny_llama, suites=("kl",))


@pytest.mark.integration
def test_bundled_model_gets_every_kept_fact_right(bundled):
    start = time.perf_counter()
    result = C.factual_recall(bundled)
    elapsed = time.perf_counter() - start
    assert result.n >= 100 and result.extra["dropped"] == 0
    assert result.value == 1.0, result.items.query("correct == 0")[["prompt", "predicted"]]
    assert result.items["margin"].min() > 0
    assert elapsed < 30
