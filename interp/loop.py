"""`interp.demo`: the whole loop on one model, as the `interp demo` command runs it.

Trace train prompts; fit the recipe validated for the model (`interp.debias`, at the sites it
was validated at), or, where none was, LSDM at the last token at the sites the trace chose;
fit the paper's subject edit for comparison; re-trace and evaluate before and after (bias on
held-out sentence shapes first); export; write figures and a report.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .common.figures import save_figure
from .export.gguf_file import GGUF_ARCHITECTURES
from .export.run import export
from .locate.trace import trace
from .measure import prompts as P
from .measure.evaluate import evaluate
from .mitigate.debias import debias, lookup
from .mitigate.lsdm import EDIT_TEMPLATES, lsdm
from .mitigate.sites import Sites, locate_sites
from .mitigate.verify import verify
from .model.load import load_model
from .report import demo_report, headline

# Train prompts the demo traces (a seeded sample of the first template's): its figure and the
# sites of an edit where no recipe was validated.
TRACE_PROMPTS = 30


def slug_of(model) -> str | None:
    """A file-name-safe name of `model` (a name, a path or a loaded model; None: the bundled
    model)."""
    if model is None:
        return None
    return Path(model if isinstance(model, str) else model.name).stem.replace(" ", "-")


def default_paths(model) -> tuple[Path, Path]:
    """(results, figures) of a demo of `model` (see `slug_of`)."""
    slug = slug_of(model)
    if slug is None:
        return Path("runs/demo"), Path("figures")
    return Path(f"runs/demo-{slug}"), Path(f"figures/{slug}")


@dataclass
class DemoResult:
    """What a demo made: the trace, the sites it chose, the edit and the paper's edit, the
    verification (before/after traces and reports), the exports and the files written."""

    located: object
    sites: Sites
    edit: object
    paper: object
    paper_report: object
    verification: object
    exports: list
    written: list = field(default_factory=list)
    seconds: float = 0.0

    def headline(self) -> str:
        """The bias before, after the edit and after the paper's edit (markdown)."""
        return headline(self.verification.before, self.verification.after, self.paper_report)

    def to_frame(self):
        """Every suite's numbers before and after the edit (`EvalReport.compare`)."""
        return self.verification.before.compare(self.verification.after)


def demo(model=None, *, out: str | Path | None = None, figures: str | Path | None = None,
         trace_prompts: int = TRACE_PROMPTS, export_gguf: bool = True,
         log: Callable[[str, bool], None] | None = None, load: dict | None = None) -> DemoResult:
    """Run the loop on `model` (a loaded model, a name or path `interp.load_model` takes, or
    None for the bundled one) and write its results under `out`, its figures under `figures`
    (defaults: `default_paths`). log(text, step): called with each step's name (step=True)
    and what it found; None is silent but for progress bars. load: `interp.load_model`'s
    options (device, dtype) for a model given by name."""
    start = time.time()
    slug = slug_of(model)
    default_out, default_figures = default_paths(model)
    out = Path(out) if out is not None else default_out
    figures = Path(figures) if figures is not None else default_figures

    def say(text: str, step: bool = False) -> None:
        if log is not None:
            log(f"[{time.time() - start:5.0f} s] {text}" if step else text, step)

    if model is None or isinstance(model, str):
        say(f"load {model or 'the bundled SmolLM2-135M-Instruct'}", True)
        m = load_model(model, **(load or {}))
    else:
        m = model
    say(repr(m))
    to_trace = P.pick(P.professions(m, "train", templates=P.TEMPLATES[:1]), trace_prompts, 0)
    say(f"trace {len(to_trace)} train prompts (noise corruption, every layer and token)", True)
    located = trace(m, to_trace, kinds=("resid", "mlp", "attn"), samples=3, seed=0,
                    progress=True)
    traced = locate_sites(located, "last")
    say(f"the trace chose {traced.text()}, because {traced.why}")
    choice, _ = lookup(m)
    if choice is not None:
        # the recipe benchmarks/mitigations.py chose for this model on a validation part
        say(f"fit {choice.recipe}, the recipe validated for this model, on the train "
            f"occupations (interp.debias; {choice.table})", True)
        edit = debias(m, progress=True)
        say(f"ran {edit.meta['chosen']}")
        why = (f"{edit.meta['sites_chosen']}; the trace chose {traced.text()}, because "
               f"{traced.why}")
    else:
        # every fitting context: the subject-pronoun templates and the object/possessive ones,
        # with the train-split definitional words kept in the same contexts ("auto")
        train = P.contexts(m, "train")
        n_templates = len({p.template for p in train})
        say(f"fit LSDM at the last token on {len(train.subjects())} train occupations × "
            f"{n_templates} contexts (definitional train words preserved; no recipe was "
            "validated for this model)", True)
        edit = lsdm(m, train, layers=traced.mlp, attn_layers=traced.attn, preserve="auto",
                    seed=0, progress=True)
        why = traced.why
    out.mkdir(parents=True, exist_ok=True)
    edit.save(out / "edit.safetensors")
    say(repr(edit))
    subject = locate_sites(located, "subject")
    say(f"for comparison, the paper's edit: the last subject token, MLP {subject.mlp}", True)
    paper = lsdm(m, P.professions(m, "train", templates=EDIT_TEMPLATES), layers=subject.mlp,
                 site="subject", seed=0, progress=True)
    paper.save(out / "paper_edit.safetensors")
    with paper.applied(m):
        paper_report = evaluate(m, ("shapes", "occupations", "declared"), progress=True)
    say("re-trace with the edit and evaluate before/after (held-out sentence shapes, test "
        "occupations, definitional, facts, perplexity, declared pronouns, KL)", True)
    v = verify(m, edit, located, progress=True)
    v.save(out / "verification")
    say(v.table())
    say("export the edited model", True)
    exports = []
    with edit.applied(m):
        exports.append(export(m, out / "export" / "hf", "hf", edit=edit))
        if export_gguf and m.arch.model_type in GGUF_ARCHITECTURES:
            gguf = out / "export" / f"{slug or 'smollm2-135m'}-debiased.f16.gguf"
            exports.append(export(m, gguf, "gguf", dtype="f16", edit=edit))
        elif export_gguf:
            say(f"no GGUF export: interp writes GGUF for {', '.join(GGUF_ARCHITECTURES)}, "
                f"not {m.arch.model_type}")
    for r in exports:
        say(r.summary())
    say("figures and report", True)
    result = DemoResult(located, traced, edit, paper, paper_report, v, exports)
    result.written = demo_report(v, edit, located, exports, out=out, figures=figures,
                                 seconds=time.time() - start, save_figure=save_figure,
                                 why=why, paper=(paper, paper_report))
    result.seconds = time.time() - start
    return result
