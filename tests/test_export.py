import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import interp
from interp.export import (
    ExportError,
    UnsupportedExportError,
    VerificationError,
    check,
    export,
    gguf_file,
    run,
    tensors,
)
from interp.mitigate.edit import Edit, EditError
from interp.model.load import gguf_conversion_dir


def small_edit(model, layer=1, seed=0, fingerprint=None):
    """A hand-made rank-one edit of one MLP down projection, big enough to change the logits."""
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(model.arch.d_model, 1, generator=g)
    V = torch.randn(model.arch.d_mlp, 1, generator=g)
    meta = {"method": "lsdm", "fingerprint": fingerprint or model.fingerprint(), "layers": [layer],
            "lam": 1000.0, "seed": seed, "n_prompts": 2,
            "prompts": [{"text": "The nurse said that", "subject": "nurse"}] * 2,
            "targets": {"abs_logodds_before": 1.5, "abs_logodds_after": 0.05}}
    return Edit({layer: (U, V)}, meta)


def leftovers(directory):
    """Temporary files or folders an atomic write would leave behind on failure."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# Round trips (each reloads the export in a fresh process)


@pytest.fixture(scope="module")
def gguf_f32(tiny_llama, tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return export(tiny_llama, path, "gguf")


@pytest.fixture(scope="module")
def gguf_f32_file(gguf_f32):
    import gguf

    return gguf.GGUFReader(gguf_f32.path)


@pytest.mark.smoke
def test_gguf_f32_round_trips_exactly(gguf_f32):
    r = gguf_f32
    assert r.ok and r.max_abs_diff <= check.F32_TOLERANCE and r.kl <= 1e-9
    assert r.weights_identical and r.tokenizer_ok
    assert r.path.is_file() and r.size_bytes == r.path.stat().st_size
    assert r.tensor_types == {"F32": 38}
    assert leftovers(r.path.parent) == []


def test_gguf_has_llama_cpp_names_metadata_and_tokenizer(gguf_f32_file, tiny_llama):
    import gguf

    from interp.model.load import bundled_gguf

    reader = gguf_f32_file
    names = {t.name for t in reader.tensors}
    per_block = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down",
                 "attn_norm", "ffn_norm"]
    want = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{n}.weight" for i in range(4) for n in per_block}
    assert names == want  # tied embeddings: no output.weight
    shapes = {t.name: tuple(int(s) for s in t.shape) for t in reader.tensors}
    assert shapes["blk.0.attn_k.weight"] == (64, 32)  # ne0 = input features, as llama.cpp wants

    def value(key):
        return reader.get_field(key).contents()

    c = tiny_llama.hf.config
    assert value("general.architecture") == "llama"
    assert value("general.file_type") == gguf.LlamaFileType.ALL_F32
    assert value("llama.block_count") == 4 and value("llama.embedding_length") == 64
    assert value("llama.feed_forward_length") == 128 and value("llama.context_length") == 256
    assert value("llama.attention.head_count") == 4 and value("llama.attention.head_count_kv") == 2
    assert value("llama.rope.dimension_count") == 16
    assert value("llama.rope.freq_base") == pytest.approx(c.rope_parameters["rope_theta"])
    assert value("llama.attention.layer_norm_rms_epsilon") == pytest.approx(c.rms_norm_eps)
    assert value("interp.fingerprint") == tiny_llama.fingerprint()
    # The tiny model borrows the bundled tokenizer, so its tokenizer fields are the bundled ones;
    # the bundled file's general.* fields (SmolLM2's size, licence) are not copied.
    source = gguf_file.source_fields(Path(*bundled_gguf()))
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.merges", "tokenizer.chat_template"):
        assert value(key) == source[key][0]
    assert len(reader.get_field("tokenizer.ggml.tokens").data) == c.vocab_size
    assert value("general.name") == "tiny-llama" and reader.get_field("general.size_label") is None


def test_gguf_q_and_k_rows_are_in_llama_cpp_order(gguf_f32_file, tiny_llama):
    """The file holds llama.cpp's interleaved rotary layout: transformers' GGUF loader (which the
    round trip also went through) maps it back to the model's weights exactly."""
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    stored = {t.name: np.array(t.data) for t in gguf_f32_file.tensors}
    undo = LlamaTensorProcessor({"num_attention_heads": 4, "num_key_value_heads": 2})
    sd = tiny_llama.state_dict()
    for kind, hf_name in (("attn_q", "q_proj"), ("attn_k", "k_proj")):
        raw = stored[f"blk.2.{kind}.weight"]
        weight = sd[f"model.layers.2.self_attn.{hf_name}.weight"].numpy()
        assert not np.array_equal(raw, weight)  # it was permuted ...
        assert np.array_equal(undo.process(raw, f"blk.2.{kind}.weight").weights, weight)  # ... back
    assert np.array_equal(stored["blk.2.attn_v.weight"],
                          sd["model.layers.2.self_attn.v_proj.weight"].numpy())


def test_permute_is_what_transformers_undoes():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    undo = LlamaTensorProcessor()
    w = torch.randn(6 * 8, 5)
    for n_head, n_kv in ((6, 6), (6, 2)):  # Q (and K without grouping), K with grouped heads
        t = w[: n_kv * 8]
        back = undo._reverse_permute_weights(gguf_file.permute_qk(t, n_head, n_kv).numpy(), n_head, n_kv)
        assert np.array_equal(back, t.numpy())


def test_gguf_q8_0_reports_a_small_nonzero_difference(tiny_llama, tmp_path, gguf_f32):
    r = export(tiny_llama, tmp_path / "tiny-q8.gguf", "gguf", dtype="q8_0")
    assert r.ok and r.tokenizer_ok and r.weights_identical is None
    assert 0 < r.max_abs_diff < 0.1 and 0 < r.kl < 1e-3
    assert r.tensor_types == {"Q8_0": 29, "F32": 9}  # norms stay f32
    assert r.size_bytes < 0.5 * gguf_f32.size_bytes


@pytest.mark.smoke
def test_hf_directory_round_trips_with_the_edit_and_its_card(tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM

    base = tiny_llama.fingerprint()
    edit = small_edit(tiny_llama)
    out = tmp_path / "tiny-edited"
    r = export(tiny_llama, out, "hf", edit=edit)  # not applied: the export applies it for itself
    assert tiny_llama.fingerprint() == base  # ... and reverts it
    assert r.ok and r.max_abs_diff <= check.F32_TOLERANCE and r.weights_identical and r.tokenizer_ok
    assert r.fingerprint != base
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "README.md", "edit.safetensors",
            "interp_provenance.json"} <= files
    # Plain transformers loads it, with lm_head tied to the embedding again.
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()
    from interp.model.fingerprint import canonical_state_dict, weights_fingerprint

    assert weights_fingerprint(canonical_state_dict(hf)) == r.fingerprint
    card = (out / "README.md").read_text()
    for text in ("lsdm", "| layers | [1] |", "| λ (lam) | 1000.0 |", base, r.fingerprint,
                 "abs_logodds_after", "## Verification", "edit.safetensors"):
        assert text in card
    assert Edit.load(out / "edit.safetensors").meta == edit.meta
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not the private temporary's 0700
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
    provenance = json.loads((out / "interp_provenance.json").read_text())
    assert provenance["edit"]["fingerprint"] == base and provenance["edit_applied_by_export"]
    assert leftovers(tmp_path) == []


@pytest.mark.smoke
def test_safetensors_round_trips_with_provenance(tiny_llama, tmp_path):
    from safetensors import safe_open

    edit = small_edit(tiny_llama, layer=0)
    with edit.applied(tiny_llama):  # already applied: exported as it is
        edited = tiny_llama.fingerprint()
        r = export(tiny_llama, tmp_path / "tiny.safetensors", "safetensors", edit=edit)
    assert r.ok and r.max_abs_diff <= check.F32_TOLERANCE and r.weights_identical
    assert r.fingerprint == edited and r.tokenizer_ok is None
    with safe_open(str(r.path), framework="pt") as f:
        meta, keys = f.metadata(), set(f.keys())
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys
    assert json.loads(meta["interp_tied"]) == {"lm_head.weight": "model.embed_tokens.weight"}
    assert meta["interp_fingerprint"] == edited
    assert json.loads(meta["interp_edit"])["layers"] == [0]
    assert json.loads(meta["interp_source"]) == {"kind": "tiny", "seed": 0}


def test_f16_export_stores_f16_and_reports_its_difference(tiny_llama, tmp_path):
    from safetensors import safe_open

    r = export(tiny_llama, tmp_path / "tiny16.safetensors", "safetensors", dtype="f16")
    with safe_open(str(r.path), framework="pt") as f:
        assert f.get_tensor("model.layers.0.mlp.down_proj.weight").dtype == torch.float16
    assert r.ok and 0 < r.max_abs_diff < 0.01 and r.weights_identical is None


def test_exported_config_drops_the_gguf_loader_notes(tiny_llama, monkeypatch):
    config = tiny_llama.hf.config
    monkeypatch.setattr(config, "quantization_config", {"quant_method": "gguf"}, raising=False)
    out = tensors.export_config(tiny_llama, "f16").to_dict()
    assert "quantization_config" not in out and out["dtype"] == "float16"
    assert out["architectures"] == ["LlamaForCausalLM"] and config.quantization_config


def test_a_gguf_is_converted_once_and_then_read_from_the_cache(gguf_f32, tiny_llama, tmp_path,
                                                              monkeypatch):
    import transformers

    gguf = gguf_f32.path
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "cache"))
    gguf_reads = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        gguf_reads.append("gguf_file" in kwargs)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        classmethod(counting))
    first, second = interp.load_model(gguf), interp.load_model(gguf)
    assert gguf_reads == [True, False]  # the second load read the converted directory
    (entry,) = (tmp_path / "cache" / "gguf").iterdir()
    assert (entry / "model.safetensors").exists() and "quantization_config" not in (
        entry / "config.json").read_text()
    text = "The nurse said that ünïcödé"
    ids = torch.tensor([first.tokenizer(text)["input_ids"]])
    assert second.tokenizer(text)["input_ids"] == ids[0].tolist()
    assert second.fingerprint() == first.fingerprint() == tiny_llama.fingerprint()
    assert second.source == first.source and second.source["kind"] == "gguf"
    with torch.no_grad():
        assert torch.equal(second.hf(ids).logits, first.hf(ids).logits)
    # A damaged entry is converted again, not loaded half.
    (entry / "model.safetensors").unlink()
    third = interp.load_model(gguf)
    assert gguf_reads[-1] is True and third.fingerprint() == first.fingerprint()
    assert (entry / "model.safetensors").exists()
    # The entry is named by the file's bytes (and dtype), not its name.
    other = tmp_path / "other.gguf"
    other.write_bytes(gguf.read_bytes()[:-1] + b"x")
    assert gguf_conversion_dir(other, torch.float32) != entry
    assert gguf_conversion_dir(gguf, torch.float16) != entry


# ---------------------------------------------------------------------------------------------
# Failures leave nothing behind and say what to do (no reloads needed)


def test_a_failing_gguf_writer_leaves_nothing(tiny_llama, tmp_path, monkeypatch):
    import gguf

    written = []
    real = gguf.GGUFWriter.write_tensor_data

    def fill_then_fail(self, tensor, *args, **kw):  # a few tensors reach the file first
        if len(written) == 3:
            raise OSError("disk full")
        written.append(tensor.shape)
        return real(self, tensor, *args, **kw)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", fill_then_fail)
    with pytest.raises(OSError, match="disk full"):
        export(tiny_llama, tmp_path / "tiny.gguf", "gguf", verify=False)
    assert len(written) == 3 and list(tmp_path.iterdir()) == []


def test_a_failing_hf_export_keeps_the_old_directory(tiny_llama, tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    monkeypatch.setattr(run, "model_card", lambda *a, **k: 1 / 0)  # fails after the weights
    with pytest.raises(ZeroDivisionError):
        export(tiny_llama, out, "hf", verify=False)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]


def test_an_f32_export_that_does_not_reproduce_the_model_is_not_written(tiny_llama, tmp_path,
                                                                        monkeypatch):
    def fake_check(request):  # a reload that is off by 1e-3
        ids = request["ids"]
        logits = check.last_token_logits(tiny_llama.hf, ids, "cpu") + 1e-3 * torch.arange(2).repeat(
            tiny_llama.arch.vocab_size // 2)
        from safetensors.torch import save_file

        save_file({"logits": logits.contiguous()}, f"{request['out']}/logits.safetensors")
        return {"tokenizer_ids": None, "fingerprint": ""}

    monkeypatch.setattr(check, "_run_check", fake_check)
    with pytest.raises(VerificationError, match="does not reproduce.*nothing was written"):
        export(tiny_llama, tmp_path / "tiny.safetensors", "safetensors")
    assert list(tmp_path.iterdir()) == []


def test_a_reload_with_the_wrong_logits_shape_is_a_clear_error(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr(check, "_load_logits", lambda path: torch.zeros(1, 3))
    monkeypatch.setattr(check, "_run_check", lambda request: {"tokenizer_ids": None,
                                                          "fingerprint": ""})
    with pytest.raises(VerificationError, match="shape"):
        export(tiny_llama, tmp_path / "x.safetensors", "safetensors")
    assert list(tmp_path.iterdir()) == []


def test_gguf_of_an_unsupported_architecture_names_what_is_supported(tiny_gpt2, tmp_path):
    with pytest.raises(UnsupportedExportError, match="only these model types: llama, mistral"):
        export(tiny_gpt2, tmp_path / "gpt2.gguf", "gguf")
    assert isinstance(UnsupportedExportError("x"), interp.UnsupportedArchitectureError)
    assert list(tmp_path.iterdir()) == []


def test_gguf_without_a_gguf_tokenizer_is_a_clear_error(tiny_llama, tmp_path):
    import dataclasses

    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    other = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(
        models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))
    model = dataclasses.replace(tiny_llama, tokenizer=other)
    with pytest.raises(ExportError, match="needs the tokenizer in GGUF form.*load_model"):
        export(model, tmp_path / "x.gguf", "gguf")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("format,dtype,message", [
    ("onnx", "f32", "unknown export format"),
    ("hf", "q8_0", "q8_0 needs format='gguf'"),
    ("gguf", "bf16", "choose one of f32, f16, q8_0"),
])
def test_bad_requests_are_clear_errors(tiny_llama, tmp_path, format, dtype, message):
    with pytest.raises(ExportError, match=message):
        export(tiny_llama, tmp_path / "x", format, dtype=dtype)


def test_an_edit_of_another_model_is_refused(tiny_llama, tmp_path):
    edit = small_edit(tiny_llama, fingerprint="0" * 32)
    with pytest.raises(EditError, match="fitted on a model"):
        export(tiny_llama, tmp_path / "x.safetensors", "safetensors", edit=edit, verify=False)
    assert list(tmp_path.iterdir()) == []


def test_q8_0_falls_back_for_rows_not_split_into_blocks():
    import gguf

    T = gguf.GGMLQuantizationType
    assert gguf_file.storage_type((4, 64), "q8_0") == T.Q8_0
    assert gguf_file.storage_type((4, 48), "q8_0") == T.F16  # 48 values do not split into 32-blocks
    assert gguf_file.storage_type((64,), "q8_0") == T.F32 and gguf_file.storage_type((64,), "f16") == T.F32
    assert gguf_file.storage_type((4, 48), "f16") == T.F16 and gguf_file.storage_type((4, 64), "f32") == T.F32


# ---------------------------------------------------------------------------------------------
# The bundled model


@pytest.mark.integration
def test_bundled_gguf_f32_export_reproduces_the_model_and_its_source(bundled, tmp_path):
    """Beyond the reload: every tensor equals the source GGUF's (written by llama.cpp's own
    converter) after dequantisation, names, shapes and Q/K order included, and the tokenizer and
    hyperparameters are the source's."""
    import gguf

    r = export(bundled, tmp_path / "smollm2.gguf", "gguf")
    assert r.ok and r.max_abs_diff <= check.F32_TOLERANCE and r.tokenizer_ok and r.weights_identical
    ours, source = gguf.GGUFReader(r.path), gguf.GGUFReader(bundled.source["path"])
    src = {t.name: t for t in source.tensors}
    assert {t.name for t in ours.tensors} == set(src)
    for t in ours.tensors:
        s = src[t.name]
        want = gguf.quants.dequantize(s.data, s.tensor_type).reshape(np.array(t.data).shape)
        assert np.array_equal(np.array(t.data), want), t.name
    for f in source.fields.values():
        if f.name.startswith(("tokenizer.", "llama.")) or f.name == "general.basename":
            assert ours.get_field(f.name).contents() == f.contents(), f.name
