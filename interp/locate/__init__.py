"""Stage 2, locate: causal mediation tracing. Corruptions, the trace spec and its grid of cells,
the exact and attribution engines, `trace`, `TraceResult` and its figures.

May import: interp.common, interp.model, interp.measure.
"""
