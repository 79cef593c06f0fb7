"""Stage 3, mitigate, and its check: sites (where an edit goes, read from a trace), key
statistics, LSDM (its phases: keys, statistics, targets, the least-squares solve, measuring the
fit), `Edit`, and `verify`, which re-traces an edited model with the spec that located the
sites and evaluates it before and after. Baselines: finetune (FT, CDA), dpo, project
(DAMA-style projection, steering), alignez (representation editing by hooks). recipes is the
table of recipes benchmarks/mitigations.py compares; debias runs the one validated for a model.

`verify` lives here, not in measure: it re-traces (locate) and applies an edit, and the tracer
itself measures with measure's prompts and metrics, so measure must stay below locate.

May import: interp.common, interp.model, interp.measure, interp.locate.
"""
