"""Gemma 2: attention and MLP outputs pass an RMS norm (`post_attention_layernorm`,
`post_feedforward_layernorm`) before they join the stream; logits are soft-capped; layers
alternate sliding-window and full attention (`config.layer_types`)."""

from .base import POST_NORMS, Family

FAMILY = Family("gemma2", ("gemma2",), out_norms=POST_NORMS)
