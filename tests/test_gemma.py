"""Integration tests on the second real model, Gemma 3 270M (base), offline from its PyPI
packages (`make` installs them): it loads by name with plain transformers' logits, and the
trace engine equals one hooked forward per cell on it (its real sliding window, head size and
post-norm gains, which the tiny model of the family only imitates)."""

from pathlib import Path

import pytest
import torch
from reference_trace import engine_cells, reference_trace
from transformers import AutoModelForCausalLM

import interp
from interp import prompts as P
from interp.locate.corruption import Noise
from interp.measure.metrics import Candidates

pytestmark = pytest.mark.integration

TEXTS = ["The nurse said that", "After the meeting, the king said that",
         "Paris is the capital of"]


@pytest.fixture(scope="module")
def gemma():
    return interp.load_model("gemma-3-270m")


def test_gemma_loads_by_name_with_plain_transformers_logits(gemma):
    a = gemma.arch
    assert (a.model_type, a.n_layers, a.d_model, a.n_heads, a.n_kv_heads, a.d_head, a.d_mlp) == (
        "gemma3_text", 18, 640, 4, 1, 256, 2048)
    assert a.post_norm == {"attn": "ln1_post", "mlp": "ln2_post"} and not a.parallel
    path = Path(gemma.source["path"])
    assert path.name == "gemma-3-270m-q4_k_m.gguf" and gemma.source["hub_id"] == "google/gemma-3-270m"
    plain = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                 dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    with torch.no_grad():
        for text in TEXTS:
            x = torch.tensor([gemma.tokenizer(text)["input_ids"]])
            ref = plain(x).logits
            assert (gemma.hf(x).logits - ref).abs().max().item() <= 1e-4
            assert (gemma.bridge(x) - ref).abs().max().item() <= 1e-4
    assert interp.model.fingerprint.weights_fingerprint(plain.state_dict()) == gemma.fingerprint()
    # interp.debias finds the recipe validated on these very weights (interp/data/validated.csv)
    found, how = interp.mitigate.debias.lookup(gemma)
    assert (found.model, how) == ("gemma-3-270m", "fingerprint")
    # The bias the issue reported: after "The nurse said that", she far above he.
    c = Candidates.resolve(gemma).ids
    lp = interp.model.forward.last_token_logprobs(gemma, [gemma.tokenizer(TEXTS[0])["input_ids"]])
    assert lp[0, c["female"]].item() == pytest.approx(-1.72, abs=0.01)
    assert lp[0, c["male"]].item() == pytest.approx(-3.85, abs=0.01)


def test_gemma_trace_equals_the_per_cell_reference(gemma):
    ps = P.from_templates(gemma, ["The {} said that"], ["nurse"])
    result = interp.trace(gemma, ps, kinds=("resid", "mlp", "attn"), samples=1, seed=2,
                          progress=False)
    got = engine_cells(result)
    last = len(ps[0].input_ids) - 1
    cells = {k for k in got if k[3] in (ps[0].subject_span[1] - 1, last) and k[2] % 4 == 1}
    ref, clean, _ = reference_trace(gemma, ps, Noise(samples=1), Candidates.resolve(gemma),
                                    kinds=("resid", "mlp", "attn"), seed=2, cells=cells)
    assert len(ref) == len(cells) > 20
    assert max(abs(got[k] - v) for k, v in ref.items()) <= 1e-3
    assert result.prompts["clean"][0] == pytest.approx(clean[0], abs=1e-4)


def test_gemma_reads_held_out_prose_in_windows_that_start_with_bos(gemma):
    """Gemma's tokenizer starts every text with <bos>, and the model reads text without it out
    of distribution: every window of the perplexity text (and of the statistics corpus) starts
    with it, so its perplexity is that of a language model (it was 240 without)."""
    from interp.measure.capability.heldout import perplexity, text_chunks
    from interp.mitigate.stats import corpus_tokens

    bos = gemma.tokenizer.bos_token_id
    chunks = text_chunks(gemma)
    assert all(c[0] == bos and bos not in c[1:] for c in chunks)
    seqs, _ = corpus_tokens(gemma, None, 1000)  # the neutral text alone: no sampling
    assert all(s[0] == bos for s in seqs)
    assert perplexity(gemma, n_boot=20).value < 60
