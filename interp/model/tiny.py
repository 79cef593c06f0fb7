"""Small random models of every supported family, for tests and for trying a family's code path
in seconds: `load_model("tiny-<model_type>")`, e.g. "tiny-gemma3_text", "tiny-gptj".

Each borrows the bundled tokenizer's vocabulary, so its prompts look real, and has 4 blocks,
d_model 64 and 4 heads (2 key/value heads where the family groups them). Families with several
kinds of blocks get both kinds (Gemma 2/3: sliding-window and full attention, the window short
enough that prompts cross it), so a test sees every code path the real models take.
"""

from __future__ import annotations

import torch

from .families import known_model_types

# "tiny-llama" and "tiny-gpt2" keep the configs they had before the other families (their
# weights, and so their fingerprints, stay the same for the same seed).
_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True)
_GPT = dict(n_embd=64, n_layer=4, n_head=4, n_positions=256)
_ALTERNATING = ["sliding_attention", "full_attention"] * 2

EXTRA = {
    "llama": {},
    "mistral": {},
    "qwen2": {},
    "qwen3": {"head_dim": 16},
    "gemma": {"head_dim": 16},
    "gemma2": {"head_dim": 16, "layer_types": _ALTERNATING, "sliding_window": 4},
    "gemma3_text": {"head_dim": 16, "layer_types": _ALTERNATING, "sliding_window": 4},
    "olmo": {},
    "olmo2": {},
    "phi3": {"pad_token_id": None},
    "gpt2": dict(_GPT, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "gptj": dict(_GPT, rotary_dim=8, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
    "gpt_neox": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                     num_attention_heads=4, max_position_embeddings=256, rotary_pct=0.5,
                     use_parallel_residual=True, attention_dropout=0.0, hidden_dropout=0.0),
}


def tiny_names() -> tuple[str, ...]:
    return tuple(f"tiny-{mt}" for mt in known_model_types())


def tiny_config(model_type: str, tokenizer):
    from transformers import AutoConfig

    special = {"vocab_size": len(tokenizer), "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}
    kwargs = EXTRA[model_type]
    shape = {} if "n_embd" in kwargs or "num_attention_heads" in kwargs else _SHAPE
    return AutoConfig.for_model(model_type, **special, **{**shape, **kwargs})


def tiny_model(model_type: str, tokenizer, seed: int, dtype):
    """A random `model_type` model with the tokenizer's vocabulary, the same for the same seed."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(model_type, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


# Random-weight models with the shapes of ones researchers study (their weights cannot be
# fetched here): for speed and memory benchmarks at scale, on a GPU or a CPU.
LARGE = {
    "llama-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                               num_attention_heads=32, num_key_value_heads=8,
                               rope_theta=500000.0, max_position_embeddings=2048,
                               tie_word_embeddings=True)),
    "gemma3-1b": ("gemma3_text", dict(hidden_size=1152, intermediate_size=6912,
                                      num_hidden_layers=26, num_attention_heads=4,
                                      num_key_value_heads=1, head_dim=256,
                                      sliding_window=512, max_position_embeddings=32768,
                                      rope_theta=1000000.0, query_pre_attn_scalar=256)),
}


def large_model(name: str, tokenizer, dtype, seed: int = 0):
    """A random model of one of the `LARGE` shapes with the tokenizer's vocabulary."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type, shape = LARGE[name]
    config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer),
                                  bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, **shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config, dtype=dtype)
