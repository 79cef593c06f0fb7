"""OLMo 2: no norm before attention or the MLP; instead each output passes an RMS norm
(`post_attention_layernorm`, `post_feedforward_layernorm`) before it joins the stream."""

from .base import POST_NORMS, Family

FAMILY = Family("olmo2", ("olmo2",), out_norms=POST_NORMS)
