"""Phi-3: pre-norm blocks with fused projections (qkv_proj, gate_up_proj); the edited maps,
o_proj and down_proj, are plain linears into the stream."""

from .base import Family

FAMILY = Family("phi3", ("phi3",))
