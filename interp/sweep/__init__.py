"""Sweeps, an application on top of the stages: a grid of causal traces and LSDM edits from one
TOML file, resumable cell by cell.

    result = run_sweep("configs/sweep_example.toml")     # or a dict; out_dir= overrides `out`
    result = run_sweep_ray("configs/sweep_example.toml")  # the same cells on Ray workers
    result.frame                                          # one row per cell: parameters, metrics
    print(result.summary())
    SweepResult.load("runs/sweep-example")

The grid is the Cartesian product of the listed values: traces = prompt sets × corruptions ×
kinds × windows, edits = layers × λ. Every cell has a stable id (a short hash of everything that
determines its result) and a directory `out/cells/<id>/` holding its artefacts and, written last
and atomically, `done.json` (its parameters and summary metrics). A rerun skips cells with a
valid done.json and recomputes the others, so a sweep killed at any point resumes where it
stopped. `out/results.csv` is rebuilt from the done.json files after every cell.

The numbers before any edit (bias on the eval sets, definitional accuracy, facts, perplexity)
are computed once per sweep and cached in `out/baseline.json`.

May import: every stage. Nothing below the applications imports it.
"""

from .checks import SweepConfigError
from .config import SweepConfig, lsdm_options, read_config, toml_dumps
from .grid import Cell, grid
from .results import SweepResult, write_results
from .ray_run import run_sweep_ray
from .run import build_prompt_set, compare, run_sweep, swappable, trace_metrics

__all__ = ["Cell", "SweepConfig", "SweepConfigError", "SweepResult", "build_prompt_set",
           "compare", "grid", "lsdm_options", "read_config", "run_sweep", "run_sweep_ray",
           "swappable", "toml_dumps", "trace_metrics", "write_results"]
