"""Stage 1, load: a model by spec (bundled GGUF, GGUF file, HF directory, hub name, tiny random
model), architecture adapters that say where each mediator lives, the resumable runner every
later stage runs forwards through, weight fingerprints, and the plain-HF-directory writer.

May import: interp.common.
"""
