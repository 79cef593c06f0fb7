"""Capability suites: evidence that a model still works after a weight edit.

- `factual_recall`: top-1 accuracy on one-token factual prompts ("The capital of France is" →
  " Paris"), with the mean log-probability of the answer.
- `perplexity`: token-level perplexity of held-out prose.
- `kl_divergence`: mean KL(reference ‖ model) of the next-token distributions at every position of
  the held-out prose; the reference is the model before the edit.
- `definitional`: definitional gender accuracy ("The king said that" → he beats she), computed by
  `interp.bias.measure`, so it is the same number the bias report shows.

Every suite returns a `CapabilityResult`: one headline value with a 95% percentile-bootstrap
interval, its sample size, and one row per item. `capability()` runs several into a
`CapabilityReport`.

Data (interp/data/):

- `facts.csv` (prompt, answer, category) holds only facts that the *unedited bundled model*
  (SmolLM2-135M-Instruct, float32) gets right: answers are one token with their leading space,
  and the model's greedy next token is the answer, ahead of the runner-up by at least 0.1 nats
  (so float noise cannot flip one). `benchmarks/make_facts.py` built it from 543 hand-written
  candidates (capitals, languages, chemical symbols, opposites, sequences, ...; no gendered
  answers): 486 have one-token answers, 235 of those were right, 232 with the margin. Re-run it
  to rebuild. On the bundled model the accuracy before an edit is 1.0 by construction, so any
  drop is damage the edit did; other models are scored on the same facts, for what it is worth.
- `heldout.txt`: about 2,600 words of neutral prose written for this project (weather, cooking,
  travel, science, history of tools). It is deliberately not `neutral.txt`, which feeds the edit's
  key statistics: perplexity measured on the text the edit protected would flatter the edit.

This package is also the public namespace `interp.capability`.
"""

from .gender import definitional
from .heldout import (
    DEFAULT_TOP_K,
    NextTokenLogprobs,
    chunk_logprobs,
    heldout_text,
    kl_divergence,
    next_token_logprobs,
    perplexity,
    text_chunks,
)
from .recall import facts, factual_recall, recall_items, with_answer_ids
from .result import CapabilityReport, CapabilityResult
from .run import DEFAULT_SUITES, SUITES, capability

__all__ = [
    "DEFAULT_SUITES", "DEFAULT_TOP_K", "SUITES", "CapabilityReport", "CapabilityResult",
    "NextTokenLogprobs", "capability", "chunk_logprobs", "definitional", "factual_recall",
    "facts", "heldout_text", "kl_divergence", "next_token_logprobs", "perplexity",
    "recall_items", "text_chunks", "with_answer_ids",
]
