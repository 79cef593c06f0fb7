"""GPT-J: parallel blocks under `h`: attention and the MLP read the same normed input and both
outputs are added to the stream; partial rotary positions; no gate in the MLP."""

from .base import Family

FAMILY = Family("gptj", ("gptj",), blocks="h", parallel=True, gated_mlp=False)
