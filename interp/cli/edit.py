"""Commands that change the model: edit, debias, export, sweep, and the demo of the loop."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from .. import command_inputs as check
from ..common.figures import save_figure
from ..export.gguf_file import GGUF_ARCHITECTURES
from ..export.run import export
from ..measure import prompts as P
from ..measure.contrast import is_gender
from ..mitigate.debias import CONTRAST_RECIPES
from ..mitigate.debias import debias as run_debias
from ..mitigate.finetune import FTSettings
from ..mitigate.keys import check_site
from ..mitigate.lsdm import LSDMSettings, lsdm
from ..mitigate.recipes import RECIPES
from ..mitigate.sites import find_sites
from ..mitigate.verify import verify_edit
from .common import (ContrastOpt, ModelOpt, RayAddressOpt, RayOpt, TemplatesOpt, WorkersOpt, app,
                     check_prompt_options, contrast_option, contrast_prompts, fail, given, load,
                     load_options, matching, one_prompt_set, prompts_option, ray_options)


@app.command()
def edit(
    model: Optional[str] = ModelOpt,
    prompts: str = prompts_option("train", "Prompts to debias: train, all, or a JSONL file."),
    layers: Optional[str] = typer.Option(None, help="Comma list of MLP layers; default: trace "
                                                    "and take the suggested band."),
    attn_layers: Optional[str] = typer.Option(None, help="Comma list of layers whose attention "
                                              "output projection to edit as well."),
    lam: float = typer.Option(None, help="Weight of the preservation statistics (λ; default "
                              f"{LSDMSettings.lam})."),
    templates: Optional[int] = TemplatesOpt,
    seed: int = typer.Option(0, help="Seed of prefixes, statistics samples and the trace."),
    site: str = typer.Option(LSDMSettings.site, help="Where keys and targets are: last (the "
                             "prompt's last token, the best recipe) or subject (the paper's "
                             "last subject token)."),
    preserve: Optional[str] = typer.Option(None, help="Prompts whose prediction must stay: a "
                                           "built-in set (e.g. definitional-train) or JSONL; "
                                           "default: definitional-train for site last."),
    preserve_weight: float = typer.Option(LSDMSettings.preserve_weight,
                                          help="Weight of the preserved prompts' keys."),
    prefixes: Optional[int] = typer.Option(None, help="Generated prefixes per prompt (0: bare "
                                           "prompts; default 0 at the last token, 1 at the "
                                           "subject)."),
    out: Path = typer.Option(Path("runs/edit"), help="Output directory."),
    verify: bool = typer.Option(False, "--verify", help="Re-trace and evaluate before/after."),
    contrast: Optional[str] = ContrastOpt,
):
    """Fit an LSDM edit (a closed-form update of the located MLP, and optionally attention,
    weights) and save it."""

    chosen_contrast = contrast_option(contrast, prompts)
    if chosen_contrast is None:
        check_prompt_options(prompts, templates, one=True)
    if preserve:
        check_prompt_options(preserve, templates, one=True, option="--preserve")
    check_site(site)
    if lam is not None:
        check.positive(lam, "--lam")
    check.at_least(preserve_weight, 0, "--preserve-weight")
    check.at_least(prefixes, 0, "--prefixes")
    arch = check.model(model)
    chosen = check.layers(layers, arch, "--layers")
    attn = check.layers(attn_layers, arch, "--attn-layers")
    m = load(model)
    ps = (one_prompt_set(m, prompts, templates) if chosen_contrast is None else
          contrast_prompts(m, chosen_contrast, prompts))
    kw = {"preserve": one_prompt_set(m, preserve, templates)} if preserve else {}
    located = None
    if chosen is None:
        typer.echo("tracing the edit prompts to locate the edit's sites ...", err=True)
        sites, located = find_sites(m, ps, site, seed=seed, progress=True,
                                    contrast=chosen_contrast)
        chosen, attn = sites.mlp, sites.attn if attn is None else attn
        typer.echo(f"edit sites: MLP {chosen}, attention {attn}: {sites.why}", err=True)
    typer.echo(f"fitting LSDM on {len(ps)} prompts, MLP layers {chosen}, attention "
               f"{attn or []}, site {site} ...", err=True)
    e = lsdm(m, ps, contrast=chosen_contrast, layers=chosen, attn_layers=attn or [], seed=seed,
             progress=True, **kw,
             **given(lam=lam, n_prefixes=prefixes), site=site, preserve_weight=preserve_weight)
    out.mkdir(parents=True, exist_ok=True)
    e.save(out / "edit.safetensors")
    typer.echo(repr(e))
    typer.echo(f"targets: {e.meta['targets']}")
    typer.echo(f"wrote {out / 'edit.safetensors'}")
    if verify:
        verified(m, e, ps, out, located=located, seed=seed, contrast=chosen_contrast)


def verified(m, e, prompts, out: Path, *, located=None, seed: int = 0, contrast=None) -> None:
    """--verify: re-trace (`verify_edit`) and evaluate before/after, save the verification and
    its figure under `out`, print the table."""
    v = verify_edit(m, e, prompts, located=located, seed=seed, progress=True, contrast=contrast)
    v.save(out / "verification")
    save_figure(v.plot(), out / "verification" / "trace_difference")
    typer.echo("")
    typer.echo(v.table())


@app.command("debias")
def debias_cmd(
    model: Optional[str] = ModelOpt,
    recipe: str = typer.Option("auto", help="auto: the recipe validated for this model "
                               "(interp/data/validated.csv; lsdm where none was), or one of "
                               + ", ".join(RECIPES) + "."),
    steps: Optional[int] = typer.Option(None, help="Optimiser steps of the ft and cda recipes "
                                        f"(default {FTSettings.steps})."),
    lr: Optional[float] = typer.Option(None, help="Learning rate of the ft and cda recipes "
                                       f"(default {FTSettings.lr})."),
    seed: int = typer.Option(0, help="Seed of the fit (and of --verify's trace)."),
    out: Path = typer.Option(Path("runs/debias"), help="Output directory."),
    verify: bool = typer.Option(False, "--verify", help="Re-trace and evaluate before/after."),
    contrast: Optional[str] = ContrastOpt,
):
    """Debias with the recipe validated for this model (benchmarks/mitigations.py chose it on
    a validation part of held-out sentences; interp/data/validated.csv) and say which it ran
    and why. Writes the edit file, which `evaluate` and `export` take."""
    check.choice(recipe, ("auto", *RECIPES), "--recipe")
    check.at_least(steps, 1, "--steps")
    if lr is not None:
        check.positive(lr, "--lr")
    chosen = contrast_option(contrast, "train")
    if chosen is not None and not is_gender(chosen):
        if recipe not in CONTRAST_RECIPES:
            fail(f"--recipe {recipe} does not take a contrast: use --recipe "
                 f"{', '.join(CONTRAST_RECIPES)}")
        if recipe == "cda" and chosen.goal == "follow":
            fail(f"--recipe cda raises every group alike, which the 'follow' contrast "
                 f"{chosen.name!r} does not ask: use --recipe ft or lsdm")
    check.model(model)
    m = load(model)
    e = run_debias(m, recipe, contrast=chosen, seed=seed, progress=True,
                   **given(steps=steps, lr=lr))
    typer.echo(f"ran {e.meta['chosen']}")
    out.mkdir(parents=True, exist_ok=True)
    e.save(out / "edit.safetensors")
    typer.echo(repr(e))
    typer.echo(f"wrote {out / 'edit.safetensors'}")
    if verify:
        verified(m, e, P.professions(m, "train") if chosen is None else
                 chosen.prompts(m, "train"), out, seed=seed, contrast=chosen)


@app.command("export")
def export_cmd(
    out: Path = typer.Argument(..., help="Output directory (hf) or file (safetensors, gguf)."),
    model: Optional[str] = ModelOpt,
    format: str = typer.Option("hf", help="hf, safetensors or gguf."),
    dtype: str = typer.Option("f32", help="f32 or f16; gguf also q8_0."),
    edit: Optional[Path] = typer.Option(None, help="An edit file to apply before exporting."),
    verify: bool = typer.Option(True, help="Reload in a fresh process and compare logits."),
):
    """Export a (possibly edited) model; the export is reloaded and checked against it."""

    from ..export.result import DTYPES as EXPORT_DTYPES
    from ..export.result import FORMATS

    check.choice(format, FORMATS, "--format")
    check.choice(dtype, EXPORT_DTYPES[format], f"--dtype of a {format} export")
    if format == "hf" and out.is_file():
        fail(f"{out} is a file, but an hf export is a directory: pick a new path")
    if format != "hf" and out.is_dir():
        fail(f"{out} is a directory, but a {format} export is one file: give a file name, "
             f"e.g. {out / ('model.' + format)}")
    arch = check.model(model)
    if format == "gguf" and arch.model_type not in GGUF_ARCHITECTURES:
        fail(f"interp writes GGUF for {', '.join(GGUF_ARCHITECTURES)}, not {arch.model_type}: "
             "export with --format hf or safetensors")
    kind = check.edit_file(edit, arch)
    m = load(model)
    e = matching(m, edit, kind)
    typer.echo(export(m, out, format, dtype=dtype, edit=e, verify=verify).summary())


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="TOML file: model, prompt sets, trace and edit grids "
                                            "(see configs/sweep_example.toml)."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default: the config's "
                                                  "`out`)."),
    ray: bool = RayOpt,
    ray_address: Optional[str] = RayAddressOpt,
    workers: Optional[int] = WorkersOpt,
):
    """Run a grid of traces and LSDM edits from a TOML file; a rerun resumes where it stopped.
    With --ray, the cells run on Ray workers that each load the model once."""

    from ..sweep.ray_run import run_sweep_ray
    from ..sweep.run import check_sweep, run_sweep

    options = ray_options(ray, ray_address, workers)
    check.file(config, "sweep config (TOML)")
    check_sweep(config, out)
    if options:
        result = run_sweep_ray(config, out, address=options["ray"], workers=options["workers"],
                               progress=True)
    else:
        result = run_sweep(config, out, progress=True)
    typer.echo(result.summary())
    typer.echo(f"\nwrote {result.out}/ (results.csv, cells/<id>/, baseline.json, config.toml)")


@app.command()
def demo(
    out: Optional[Path] = typer.Option(None, help="Where results and exports go (default "
                                       "runs/demo, or runs/demo-MODEL for another model)."),
    figures: Optional[Path] = typer.Option(None, help="Where figures go (default figures/, or "
                                           "figures/MODEL/ for another model)."),
    trace_prompts: Optional[int] = typer.Option(None, help="Train prompts to trace (seeded sample; "
                                      "default: interp.demo's)."),
    export_gguf: bool = typer.Option(True, help="Also export the edited model as GGUF, where "
                                     "its family has a GGUF layout."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Another model than the "
                                        "bundled one: gemma-3-270m, a path, or tiny-llama "
                                        "(every step in seconds)."),
):
    """The whole loop on the bundled model (or --model): trace train prompts, fit the recipe
    validated for the model (interp.debias, at the sites it was validated at; where none was,
    LSDM at the last token at the sites the trace chose), fit the paper's subject edit for
    comparison, re-trace and evaluate before/after (bias on held-out sentence shapes first),
    export, and write figures and a report."""
    from ..loop import demo as run_demo

    check.at_least(trace_prompts, 1, "--trace-prompts")
    check.model(model)
    start = time.time()

    def log(text: str, step: bool) -> None:
        if step:
            typer.secho(f"\n{text}", bold=True, err=True)
        else:
            typer.echo(text)

    result = run_demo(model, out=out, figures=figures, export_gguf=export_gguf, log=log,
                      load=load_options(), **given(trace_prompts=trace_prompts))
    typer.echo(result.headline())
    typer.echo("\n".join(f"wrote {p}" for p in result.written))
    typer.echo(f"\ndemo finished in {time.time() - start:.0f} s")
