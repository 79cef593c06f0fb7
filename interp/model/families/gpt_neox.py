"""GPT-NeoX / Pythia: parallel blocks when `use_parallel_residual` is set (Pythia's default):
attention and the MLP read the stream through their own norms and both add to it."""

from .base import Family

FAMILY = Family("gpt_neox", ("gpt_neox",), parallel=True, parallel_flag="use_parallel_residual",
                gated_mlp=False)
