"""Commands that measure: info, bias, contrasts, trace, atlas, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import command_inputs as check
from ..common.figures import save_figure
from ..locate.atlas import atlas as run_atlas
from ..locate.trace import trace as run_trace
from ..measure.bias import bias as measure_bias
from ..measure.capability import next_token_logprobs
from ..measure.contrast import contrast as read_contrast
from ..measure.contrast import contrasts as list_contrasts
from ..measure.contrast import is_gender, measure_contrast
from ..measure.evaluate import comparison_table
from ..measure.evaluate import evaluate as run_eval
from ..measure.prompts import pick
from ..model.upstream import version_report
from .common import (ContrastOpt, ModelOpt, TemplatesOpt, app, check_prompt_options,
                     contrast_option, contrast_prompts, default_of, fail, load, matching,
                     one_prompt_set, prompt_sets, prompts_option)


@app.command()
def info(model: Optional[str] = ModelOpt,
         versions: bool = typer.Option(False, "--versions",
                                       help="Only the library versions; load no model.")):
    """Show the library versions against the tested ranges, then a model's architecture,
    mediator hooks and weight fingerprint."""

    typer.echo(f"{'package':<18}{'installed':<16}{'CI (lock)':<16}tested range")
    outside = []
    for name, installed, locked, tested, ok in version_report():
        flag = "" if ok else "   <- OUTSIDE the tested range"
        typer.echo(f"{name:<18}{installed:<16}{locked:<16}{tested}{flag}")
        if not ok:
            outside.append(f"{name} {installed}")
    if outside:
        typer.secho(f"\n{', '.join(outside)}: not a version this release of interp was tested "
                    "with; results may be wrong or it may fail. `make install` (from a clone) "
                    "installs the tested versions of requirements.lock.", fg=typer.colors.YELLOW)
    if versions:
        return
    check.model(model)
    typer.echo("")
    m = load(model)
    a = m.arch
    typer.echo(repr(m))
    typer.echo(f"source       {m.source}")
    typer.echo(f"fingerprint  {m.fingerprint()}")
    typer.echo(f"tied embed.  {a.tied_embeddings}   gated MLP  {a.gated_mlp}   "
               f"parallel blocks  {a.parallel}")
    normed = ", ".join(f"{c} (through {n})" for c, n in a.post_norm.items())
    typer.echo("outputs      " + (f"normed before the stream: {normed}" if normed
                                  else "added to the stream as written"))
    for kind in ("resid", "mlp", "attn", "head", "mlp_key"):
        typer.echo(f"hook {kind:<8}{a.hook(kind, 0)}  (layer 0 of {a.n_layers})")


@app.command()
def bias(
    model: Optional[str] = ModelOpt,
    prompts: str = prompts_option("train,test,definitional",
                                  "Comma list of train, test, all, definitional or JSONL files."),
    templates: Optional[int] = TemplatesOpt,
    batch_size: int = typer.Option(64, help="Prompts per forward pass."),
    out: Optional[Path] = typer.Option(None, help="Directory to save the per-prompt table, "
                                                  "summary and a figure."),
    contrast: str = typer.Option("gender", help="The bias axis: a built-in (interp contrasts) "
                                                "or a .toml/.json contrast file."),
):
    """Print bias scores of a model on prompt sets as a table."""

    chosen = read_contrast(contrast)
    check_prompt_options(prompts, templates)
    check.at_least(batch_size, 1, "--batch-size")
    check.model(model)
    m = load(model)
    if not is_gender(chosen):
        report = measure_contrast(m, chosen, batch_size=batch_size, progress=True)
        typer.echo(f"\n{chosen.name} on {m.name} ({chosen.goal}), per part and group:\n")
        typer.echo(report.table())
        if out:
            report.save(out)
            save_figure(report.plot(), out / chosen.name)
            typer.echo(f"\nwrote {out}/")
        return
    report = measure_bias(m, prompt_sets(m, prompts, templates), batch_size=batch_size)
    typer.echo(f"\nBias of {m.name} (gap = p(he) − p(she); slopes regress the gap on the "
               "stereotype (a_s) and definitional (a_f) scores):\n")
    typer.echo(report.table())
    if out:
        report.save(out)
        save_figure(report.plot(), out / "bias")
        typer.echo(f"\nwrote {out}/")


@app.command()
def contrasts():
    """List the built-in contrasts (bias axes); `--contrast` takes one of these or a file."""
    for name in list_contrasts():
        typer.echo(f"{name:<14}{read_contrast(name)!r}")


@app.command()
def trace(
    model: Optional[str] = ModelOpt,
    prompts: str = prompts_option("train", "train, test, all, definitional, or a JSONL file."),
    kinds: str = typer.Option("resid,mlp,attn", help="Comma list of resid, mlp, attn, head."),
    corruption: str = typer.Option("noise", help="noise or swap."),
    metric: str = typer.Option("logodds", help="logodds, gap, abs_gap, p_male, p_female."),
    window: int = typer.Option(1, help="Restore MLP/attention over this many layers."),
    samples: int = typer.Option(3, help="Noise samples per prompt."),
    seed: int = typer.Option(0, help="Noise seed (and prompt sampling seed)."),
    method: str = typer.Option("exact", help="exact or attribution."),
    templates: Optional[int] = TemplatesOpt,
    limit: Optional[int] = typer.Option(None, help="Trace at most N prompts (seeded sample)."),
    swap_words: str = typer.Option("person,man,woman",
                                   help="Swap corruption: replacement words, first fit wins."),
    batch_size: Optional[int] = typer.Option(
        None, help="Patched runs per forward pass at most (default: as many as fit memory)."),
    out: Path = typer.Option(Path("runs/trace"), help="Output directory."),
    contrast: Optional[str] = ContrastOpt,
):
    """Causal tracing: restore each site's clean activation into the corrupted run."""

    from ..locate.spec import KINDS, METHODS
    from ..sweep.config import CORRUPTIONS, METRICS

    chosen = contrast_option(contrast, prompts)
    if chosen is not None and metric != "logodds":
        fail(f"--metric {metric} and --contrast: a contrast sets the metric (its lean); "
             "pass one of them")
    if chosen is None:
        check_prompt_options(prompts, templates, one=True)
    check.choices(kinds, KINDS, "--kinds")
    check.choice(corruption, CORRUPTIONS, "--corruption")
    check.choice(metric, METRICS, "--metric")
    check.choice(method, METHODS, "--method")
    for value, option in ((window, "--window"), (samples, "--samples"), (limit, "--limit"),
                          (batch_size, "--batch-size")):
        check.at_least(value, 1, option)
    arch = check.model(model)
    if window > arch.n_layers:
        fail(f"--window {window} is wider than the model ({arch.n_layers} layers)")
    m = load(model)
    ps = pick(one_prompt_set(m, prompts, templates) if chosen is None else
              contrast_prompts(m, chosen, prompts), limit, seed)
    typer.echo(f"tracing {len(ps)} prompts of {ps.name!r} on {m.name} ...", err=True)
    result = run_trace(m, ps, contrast=chosen,
                       kinds=[k.strip() for k in kinds.split(",") if k.strip()],
                       corruption=corruption, metric=metric, window=window, samples=samples,
                       swap_words=[w.strip() for w in swap_words.split(",") if w.strip()],
                       seed=seed, method=method, batch_size=batch_size, progress=True)
    result.save(out)
    written = save_figure(result.plot(), out / "trace")
    written += save_figure(result.plot(prompt_id=0), out / "trace_prompt0")
    typer.echo(repr(result))
    typer.echo("\nStrongest sites (mean oriented effect over prompts, 95% CI):")
    typer.echo(result.top_sites(10).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if "mlp" in result.spec["kinds"]:
        typer.echo(f"\nsuggested MLP layers to edit: {result.suggest_layers('mlp')}")
    typer.echo(f"\nwrote {out}/ (cells.csv, prompts.json, spec.json, "
               f"{', '.join(p.name for p in written)})")


@app.command()
def atlas(
    model: Optional[str] = ModelOpt,
    contrasts: Optional[str] = typer.Option(None, help="Comma list of built-in contrasts or "
                                            "contrast files (default: every built-in)."),
    prompts: int = typer.Option(default_of(run_atlas, "prompts"),
                                help="Train prompts traced per contrast (a seeded sample)."),
    samples: int = typer.Option(default_of(run_atlas, "samples"), help="Noise samples per "
                                                                         "prompt."),
    seed: int = typer.Option(0, help="Noise and sampling seed."),
    out: Path = typer.Option(Path("runs/atlas"), help="Output directory."),
):
    """A bias atlas: trace every contrast on one model with one spec and draw them side by
    side (MLP and attention effects by layer and token group)."""

    names = [c.strip() for c in (contrasts or "").split(",") if c.strip()] or None
    chosen = [read_contrast(n) for n in names] if names else None
    check.at_least(prompts, 1, "--prompts")
    check.at_least(samples, 1, "--samples")
    check.model(model)
    m = load(model)
    result = run_atlas(m, chosen, prompts=prompts, samples=samples, seed=seed, progress=True)
    result.save(out)
    written = save_figure(result.plot(), out / "atlas")
    typer.echo(repr(result))
    typer.echo(result.table())
    typer.echo(f"\nwrote {out}/ (a trace per contrast, atlas.json, "
               f"{', '.join(p.name for p in written)})")


FileOpt = {name: typer.Option(None, help=f"{label} file or folder to score as well.")
           for name, label in (("winobias", "WinoBias"), ("winogender", "WinoGender"),
                               ("crows_pairs", "CrowS-Pairs"), ("stereoset", "StereoSet dev.json"))}


@app.command()
def evaluate(
    model: Optional[str] = ModelOpt,
    suites: Optional[str] = typer.Option(
        None, help="Comma list of occupations, shapes, definitional, facts, perplexity, "
                   "declared (declared pronouns kept); default: all of them."),
    edit: Optional[Path] = typer.Option(None, help="An edit file: evaluate before and after it."),
    winobias: Optional[Path] = FileOpt["winobias"],
    winogender: Optional[Path] = FileOpt["winogender"],
    crows_pairs: Optional[Path] = FileOpt["crows_pairs"],
    stereoset: Optional[Path] = FileOpt["stereoset"],
    out: Optional[Path] = typer.Option(None, help="Directory to save the report(s)."),
):
    """Bias and capability suites, each number with its 95% interval."""

    from ..measure.evaluate import DEFAULT_SUITES
    from ..measure.suites.run import SUITES

    names = (list(DEFAULT_SUITES) if suites is None
             else [s.strip() for s in suites.split(",") if s.strip()])
    files = {k: v for k, v in (("winobias", winobias), ("winogender", winogender),
                               ("crows_pairs", crows_pairs), ("stereoset", stereoset))
             if v is not None}
    if names:
        check.choices(",".join(names), DEFAULT_SUITES, "--suites")
    elif not files:
        fail("nothing to evaluate: name --suites or give a benchmark file (--winobias ...)")
    for name, path in files.items():
        check.file(path, f"{name} data", directory_ok=True)
        check.loaded(SUITES[name][0], path)
    arch = check.model(model)
    kind = check.edit_file(edit, arch)
    m = load(model)
    e = matching(m, edit, kind)
    before = run_eval(m, names, files=files, progress=True)
    if e is None:
        typer.echo(before.table())
        if out:
            before.save(out)
        return
    reference = next_token_logprobs(m)
    with e.applied(m):
        after = run_eval(m, [*names, "kl"], files=files, reference=reference, progress=True)
    typer.echo(comparison_table(before, after))
    if out:
        before.save(out / "before")
        after.save(out / "after")
