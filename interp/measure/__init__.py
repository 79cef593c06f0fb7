"""The measuring instruments: prompt sets and templates, bias metrics, bias reports, capability
suites (facts, perplexity, KL, definitional gender), the benchmark suites on the user's files
(one module per benchmark, in `suites/`), and `evaluate`, which runs them into one report.

Every stage after it measures with these, so it sits right above the model.

May import: interp.common, interp.model.
"""
