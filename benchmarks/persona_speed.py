"""Speed of the persona-bias evaluation: 1,000 BBQ-format items × (no persona + 4 personas) on
the bundled model, the target being under 10 minutes; against the plain way of scoring
the same prompts (each prompt run whole, `continuation_sums`), timed in the same run without a
persona and with the first one.

Sharing a context between its two questions pays only with enough items that many contexts
have the same length (they are batched by length): on 100 items the staged scorer was slower
(0.63×), on 1,000 faster. For the same reason `persona_bias` scores all its conditions in one
pass, which fills the batches; the script times one pass per condition against it too.

    python benchmarks/persona_speed.py               # ~11 min on 2 cores
    python benchmarks/persona_speed.py --items 200   # a quicker look
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

import interp  # noqa: E402
from interp.studies import bbq  # noqa: E402
from interp.studies import bbq_items as B  # noqa: E402
from interp.measure.audit_items import continuation_sums  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--items", type=int, default=1000)
    args = ap.parse_args()
    model = interp.load_model(args.model) if args.model else interp.load_model()
    items = B.frame(B.ours())
    items = items.sample(n=min(args.items, len(items)), random_state=0).reset_index(drop=True)
    personas = list(bbq.DEFAULT_PERSONAS)
    t = time.perf_counter()
    result = bbq.persona_bias(model, items, personas, progress=True)
    total = time.perf_counter() - t
    n_prompts = len(items) * (1 + len(personas))
    print(f"{len(items)} items × {1 + len(personas)} conditions = {n_prompts} prompts: "
          f"{total:.0f} s ({total / 60:.1f} min; target < 10 min), "
          f"{n_prompts / total:.1f} prompts/s")

    t = time.perf_counter()
    for persona in (None, *personas):
        bbq.answer_logprobs(model, items, persona, progress=False)
    apart = time.perf_counter() - t
    print(f"one pass per condition {apart:.0f} s against the pooled pass in persona_bias: "
          f"{apart / total:.2f}× (the pooled time includes scoring)")

    for persona in (None, personas[0]):
        rows = items.to_dict("records")
        t = time.perf_counter()
        contexts = [bbq.prompt(r, persona) for r in rows for _ in range(3)]
        answers = [r[f"ans{k}"] for r in rows for k in range(3)]
        plain = continuation_sums(model, contexts, answers, progress=False).reshape(-1, 3)
        plain_s = time.perf_counter() - t
        t = time.perf_counter()
        staged = bbq.answer_logprobs(model, items, persona, progress=False)
        staged_s = time.perf_counter() - t
        print(f"{len(items)} items, persona {persona!r}: each prompt whole {plain_s:.1f} s, "
              f"staged {staged_s:.1f} s: {plain_s / staged_s:.2f}× "
              f"(max |Δ log p| {np.abs(plain - staged).max():.1e})")
    print(result.scores().round(2).to_string())


if __name__ == "__main__":
    main()
