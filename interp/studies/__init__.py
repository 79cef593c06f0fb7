"""Studies from the same literature, built on the loop: the implicit-reward bias audit between two
models, gender-swapped story pairs, persona bias on BBQ-format data, corpus co-occurrence
against model bias; one module (or subpackage) per study: `reward` (the audit) and
`audit_items` (its item sets), `stories` (story-pair consistency), `bbq_items` and `bbq`
(BBQ-format items, persona bias), `corpus` and `corpus_compare` (co-occurrence counts against
the model's shares).

May import: interp.common, interp.model, interp.measure, interp.locate, interp.mitigate.
Not interp.export, nor the applications.
"""
