"""Command line: `interp info|bias|trace|edit|debias|evaluate|export|sweep|demo` and the studies."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from . import command_inputs as check
from .common.errors import InputError, InterpError
from .common.figures import save_figure
from .export.gguf_file import GGUF_ARCHITECTURES
from .export.run import export
from .locate.trace import trace as run_trace
from .measure import prompts as P
from .measure.bias import bias as measure_bias
from .measure.capability import next_token_logprobs
from .measure.evaluate import comparison_table
from .measure.evaluate import evaluate as run_eval
from .measure.prompts import pick
from .mitigate.debias import debias as run_debias
from .mitigate.debias import lookup as lookup_validated
from .mitigate.edit import Edit
from .mitigate.keys import check_site
from .mitigate.lsdm import EDIT_TEMPLATES, choose_sites, last_token_sites, lsdm
from .mitigate.recipes import RECIPES
from .mitigate.verify import verify as run_verify
from .model.load import load_model
from .model.upstream import version_report
from .report import demo_report, headline
from .sweep.ray_run import run_sweep_ray
from .sweep.run import run_sweep

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Locate where a language model carries social bias and remove it.")


ModelOpt = typer.Option(None, "--model", "-m",
                        help="Bundled model (default), a .gguf file, an HF directory or hub name, "
                             "or tiny-<model_type> (tiny-llama, tiny-gemma3_text, ...).")
TemplatesOpt = typer.Option(None, help="Use only the first N built-in templates.")


def prompts_option(default: str, help: str):
    return typer.Option(default, "--prompts", "-p", help=help)


def _fail(message: str) -> None:
    _say(message)
    raise typer.Exit(code=2)


# Where and in what precision every command loads its model (the global options).
DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
_LOADING = {"device": None, "dtype": "f32", "debug": False}


@app.callback()
def _options(
    device: Optional[str] = typer.Option(None, help="Where to run: cpu, cuda, cuda:1, ... "
                                         "(default: cuda when there is one, else cpu)."),
    dtype: str = typer.Option("f32", help="Weights' precision: f32, bf16 or f16 (bf16/f16 "
                              "halve the memory; results then differ in the 3rd digit)."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error."),
):
    """Locate where a language model carries social bias and remove it."""
    _LOADING["debug"] = debug
    if dtype not in DTYPES:
        _fail(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if device is not None:
        import torch

        try:
            dev = torch.device(device)
        except RuntimeError:
            _fail(f"--device {device!r} is not a device: use cpu, cuda or cuda:N")
        if dev.type == "cuda" and not torch.cuda.is_available():
            _fail(f"--device {device}: this machine has no CUDA GPU that torch can use; "
                  "leave --device out to run on the CPU")
        if dev.type not in ("cpu", "cuda"):
            _fail(f"--device {device!r}: interp runs on cpu or cuda")
    _LOADING.update(device=device, dtype=dtype)


def _load(model: Optional[str]):
    """Load the model; every command checks its input (`_checked`) before it gets here."""
    import torch

    try:
        return load_model(model, device=_LOADING["device"],
                          dtype=getattr(torch, DTYPES[_LOADING["dtype"]]))
    except InterpError as e:
        _fail(str(e))


def _checked(fn, *args, **kw):
    """Run an input check (`interp.command_inputs`); a complaint becomes one line and exit 2."""
    try:
        return fn(*args, **kw)
    except InterpError as e:
        _fail(str(e))


def _matching(m, edit_path: Optional[Path], kind: Optional[str]):
    """The edit file (its header checked before the load: `kind` from `check.edit_file`) loaded
    and held to the loaded model's exact weights (its fingerprint), before any compute."""
    from .mitigate.alignez import RepresentationEdit

    if edit_path is None:
        return None
    try:
        e = (RepresentationEdit if kind == "representation" else Edit).load(edit_path)
        e.check_model(m)
    except InterpError as err:
        _fail(f"{edit_path}: {err}" if str(edit_path) not in str(err) else str(err))
    return e


def _check_prompt_options(prompts: str, templates: Optional[int], *, one: bool = False,
                          option: str = "--prompts") -> None:
    check.prompt_sets(prompts, one=one, option=option)
    check.at_least(templates, 1, "--templates")
    if templates is not None and templates > len(P.TEMPLATES):
        raise InputError(f"--templates {templates}: there are {len(P.TEMPLATES)} built-in "
                         "templates")


def build_prompt_sets(model, names: str, templates: Optional[int] = None) -> dict:
    """Prompt sets from a comma list of built-in names (train, test, all, definitional) or JSONL
    paths; `templates` keeps the first N templates of the built-in sets."""

    chosen = P.TEMPLATES[:templates] if templates else P.TEMPLATES
    sets = {}
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        if name in ("definitional", "definitional-train", "definitional-test"):
            split = name.partition("-")[2] or None
            sets[name] = P.definitional(model, templates=chosen, split=split)
        elif name in ("train", "test", "all"):
            sets[name] = P.professions(model, None if name == "all" else name, templates=chosen)
        elif name == "contexts":  # train occupations in every fitting context (their slots)
            sets[name] = P.contexts(model, "train")
        elif Path(name).is_file():
            sets[Path(name).stem] = P.from_jsonl(model, name)
        else:
            _fail(f"unknown prompt set {name!r}: use {', '.join(check.BUILTIN_SETS)} or a "
                  "JSONL file with 'text' and 'subject' on each line")
    if not sets:
        _fail("no prompt sets given")
    for ps in sets.values():
        if ps.dropped:
            typer.echo(f"{ps.name}: {ps.drop_summary()}", err=True)
    return sets


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
    _checked(check.model, model)
    typer.echo("")
    m = _load(model)
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
):
    """Print bias scores of a model on prompt sets as a table."""

    _checked(_check_prompt_options, prompts, templates)
    _checked(check.at_least, batch_size, 1, "--batch-size")
    _checked(check.model, model)
    m = _load(model)
    try:
        report = measure_bias(m, build_prompt_sets(m, prompts, templates), batch_size=batch_size)
    except InterpError as e:
        _fail(str(e))
    typer.echo(f"\nBias of {m.name} (gap = p(he) − p(she); slopes regress the gap on the "
               "stereotype (a_s) and definitional (a_f) scores):\n")
    typer.echo(report.table())
    if out:
        report.save(out)
        save_figure(report.plot(), out / "bias")
        typer.echo(f"\nwrote {out}/")


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
):
    """Causal tracing: restore each site's clean activation into the corrupted run."""

    from .locate.spec import KINDS, METHODS
    from .sweep.config import CORRUPTIONS, METRICS

    _checked(_check_prompt_options, prompts, templates, one=True)
    _checked(check.choices, kinds, KINDS, "--kinds")
    _checked(check.choice, corruption, CORRUPTIONS, "--corruption")
    _checked(check.choice, metric, METRICS, "--metric")
    _checked(check.choice, method, METHODS, "--method")
    for value, option in ((window, "--window"), (samples, "--samples"), (limit, "--limit"),
                          (batch_size, "--batch-size")):
        _checked(check.at_least, value, 1, option)
    arch = _checked(check.model, model)
    if window > arch.n_layers:
        _fail(f"--window {window} is wider than the model ({arch.n_layers} layers)")
    m = _load(model)
    sets = build_prompt_sets(m, prompts, templates)
    ps = pick(next(iter(sets.values())), limit, seed)
    typer.echo(f"tracing {len(ps)} prompts of {ps.name!r} on {m.name} ...", err=True)
    try:
        result = run_trace(m, ps, kinds=[k.strip() for k in kinds.split(",") if k.strip()],
                           corruption=corruption, metric=metric, window=window, samples=samples,
                           swap_words=[w.strip() for w in swap_words.split(",") if w.strip()],
                           seed=seed, method=method, batch_size=batch_size, progress=True)
    except InterpError as e:
        _fail(str(e))
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


def _suite_files(winobias, winogender, crows_pairs, stereoset) -> dict:
    given = {"winobias": winobias, "winogender": winogender, "crows_pairs": crows_pairs,
             "stereoset": stereoset}
    return {k: v for k, v in given.items() if v is not None}


FileOpt = {name: typer.Option(None, help=f"{label} file or folder to score as well.")
           for name, label in (("winobias", "WinoBias"), ("winogender", "WinoGender"),
                               ("crows_pairs", "CrowS-Pairs"), ("stereoset", "StereoSet dev.json"))}


@app.command()
def evaluate(
    model: Optional[str] = ModelOpt,
    suites: str = typer.Option("occupations,shapes,definitional,facts,perplexity",
                               help="Comma list of occupations, shapes, definitional, facts, "
                                    "perplexity."),
    edit: Optional[Path] = typer.Option(None, help="An edit file: evaluate before and after it."),
    winobias: Optional[Path] = FileOpt["winobias"],
    winogender: Optional[Path] = FileOpt["winogender"],
    crows_pairs: Optional[Path] = FileOpt["crows_pairs"],
    stereoset: Optional[Path] = FileOpt["stereoset"],
    out: Optional[Path] = typer.Option(None, help="Directory to save the report(s)."),
):
    """Bias and capability suites, each number with its 95% interval."""

    from .measure.evaluate import DEFAULT_SUITES
    from .measure.suites.run import SUITES

    names = [s.strip() for s in suites.split(",") if s.strip()]
    files = _suite_files(winobias, winogender, crows_pairs, stereoset)
    if names:
        _checked(check.choices, suites, DEFAULT_SUITES, "--suites")
    elif not files:
        _fail("nothing to evaluate: name --suites or give a benchmark file (--winobias ...)")
    for name, path in files.items():
        _checked(check.file, path, f"{name} data", directory_ok=True)
        _checked(check.loaded, SUITES[name][0], path)
    arch = _checked(check.model, model)
    kind = _checked(check.edit_file, edit, arch)
    m = _load(model)
    e = _matching(m, edit, kind)
    try:
        before = run_eval(m, names, files=files, progress=True)
        if e is None:
            typer.echo(before.table())
            if out:
                before.save(out)
            return

        reference = next_token_logprobs(m)
        with e.applied(m):
            after = run_eval(m, [*names, "kl"], files=files, reference=reference, progress=True)
    except InterpError as e:
        _fail(str(e))
    typer.echo(comparison_table(before, after))
    if out:
        before.save(out / "before")
        after.save(out / "after")


@app.command()
def audit(
    policy: Optional[str] = typer.Option(None, help="The policy model (default: the bundled "
                                                    "one)."),
    reference: Optional[str] = typer.Option(
        None, help="The reference model (default: the policy model itself, with --edit)."),
    items: str = typer.Option("disclosure", help="disclosure, misgendering, or a CSV with "
                                                 "template_id, identity, group, prompt, "
                                                 "harmful, benign (or TANGO's misgendering "
                                                 "CSV with --tango)."),
    tango: bool = typer.Option(False, help="ITEMS is TANGO's misgendering CSV."),
    edit: Optional[Path] = typer.Option(None, help="An edit file applied to the policy: audit "
                                                   "what the edit makes the model prefer."),
    beta: float = typer.Option(0.1, help="β of the implicit reward."),
    limit: Optional[int] = typer.Option(None, help="Audit at most N items (seeded sample)."),
    seed: int = typer.Option(0, help="Sampling and bootstrap seed."),
    out: Optional[Path] = typer.Option(None, help="Directory to save the audit in."),
):
    """Implicit-reward audit: which continuations the policy prefers over the reference, per
    identity group (TGNB vs binary), with bootstrap intervals and paired tests."""

    from .studies import audit_items
    from .studies.reward import reward_audit

    if reference is None and edit is None:
        _fail("give --reference, or --edit to audit an edit against the unedited model")
    if tango and items in ("disclosure", "misgendering"):
        _fail(f"--tango reads TANGO's misgendering CSV: give its path as --items, not {items!r}")
    if not tango and items not in ("disclosure", "misgendering"):
        _checked(check.file, items, "audit items CSV")
    elif tango:
        _checked(check.file, items, "TANGO misgendering CSV")
    frame = _checked(check.loaded, audit_items.misgendering if tango else audit_items.resolve,
                     items)
    _checked(check.positive, beta, "--beta")
    _checked(check.at_least, limit, 1, "--limit")
    arch = _checked(check.model, policy)
    if reference is not None:
        _checked(check.model, reference)
    kind = _checked(check.edit_file, edit, arch)
    pol = _load(policy)
    e = _matching(pol, edit, kind)
    ref = pol if reference is None else _load(reference)
    try:
        if limit:
            frame = frame.sample(n=min(limit, len(frame)), random_state=seed)
        result = reward_audit(pol, ref, frame, beta=beta, seed=seed, progress=True, edit=e)
    except InterpError as e:
        _fail(str(e))
    typer.echo(result.table())
    typer.echo(result.tables["identities"].round(4).to_string(index=False))
    if out:
        result.save(out)


def _story_pairs(pairs: str, split: str):
    from .studies import stories as S

    _checked(check.choice, split, ("all", "train", "test"), "--split")
    if pairs != "ours":
        _checked(check.file, pairs, "GenMO story-pairs JSON")
    frame = _checked(check.loaded, S.resolve, pairs)
    return frame if split == "all" else S.split(frame)[split == "test"]


@app.command()
def stories(
    model: Optional[str] = ModelOpt,
    pairs: str = typer.Option("ours", help="ours, or GenMO's JSON (a list of objects with "
                                           "male_story, female_story, environment, source)."),
    split: str = typer.Option("all", help="all, or the train / test side of the split by "
                                          "whole templates."),
    edit: Optional[Path] = typer.Option(None, help="An edit file applied while judging."),
    limit: Optional[int] = typer.Option(None, help="Judge at most N pairs (seeded sample)."),
    seed: int = typer.Option(0, help="Sampling and bootstrap seed."),
    out: Optional[Path] = typer.Option(None, help="Directory to save the result in."),
):
    """Story-pair consistency: the model judges both gender versions of each story (Moral /
    Immoral / Both, by likelihood); how often they differ, and which gender is judged more
    harshly."""

    from .studies.stories import story_consistency

    frame = _story_pairs(pairs, split)
    _checked(check.at_least, limit, 1, "--limit")
    arch = _checked(check.model, model)
    kind = _checked(check.edit_file, edit, arch)
    m = _load(model)
    e = _matching(m, edit, kind)
    try:
        if limit:
            frame = frame.sample(n=min(limit, len(frame)), random_state=seed)
        result = story_consistency(m, frame, seed=seed, progress=True, edit=e)
    except InterpError as e:
        _fail(str(e))
    typer.echo(result.table())
    if out:
        result.save(out)


@app.command()
def dpo(
    model: Optional[str] = ModelOpt,
    pairs: str = typer.Option("ours", help="ours, or GenMO's JSON: preference pairs come from "
                                           "the train side of the split, the held-apart side "
                                           "is measured before and after."),
    limit: int = typer.Option(200, help="Preference pairs to train on at most."),
    preferences: Optional[Path] = typer.Option(None, help="Train on these preference pairs "
                                               "instead (a CSV with prompt, chosen, "
                                               "rejected)."),
    layers: Optional[str] = typer.Option(None, help="Comma list of MLP layers to train; "
                                                    "default: trace, as `interp edit` does."),
    attn_layers: Optional[str] = typer.Option(None, help="Comma list of layers whose "
                                              "attention output projection to train."),
    beta: float = typer.Option(0.1, help="DPO's β."),
    epochs: int = typer.Option(3, help="Passes over the preference pairs."),
    lr: float = typer.Option(3e-4, help="Adam's learning rate."),
    seed: int = typer.Option(0, help="Seed of the trace and the batches."),
    out: Path = typer.Option(Path("runs/dpo"), help="Output directory."),
):
    """Preference debiasing: DPO on the model's own story-pair inconsistencies (chosen: the
    judgement both versions share; rejected: the one that departs), training the weights an
    LSDM edit would change. Saves the change as an edit file."""

    from .mitigate.dpo import dpo as run_dpo
    from .studies import stories as S

    train, test = _story_pairs(pairs, "train"), _story_pairs(pairs, "test")
    if preferences is not None:
        given = _checked(check.csv_columns, preferences, ("prompt", "chosen", "rejected"),
                         "preference pairs")
    _checked(check.at_least, limit, 1, "--limit")
    _checked(check.at_least, epochs, 1, "--epochs")
    _checked(check.positive, beta, "--beta")
    _checked(check.positive, lr, "--lr")
    arch = _checked(check.model, model)
    chosen = _checked(check.layers, layers, arch, "--layers")
    attn = _checked(check.layers, attn_layers, arch, "--attn-layers") or []
    m = _load(model)
    try:
        if preferences is None:
            judged = S.story_consistency(m, train, seed=seed, progress=True)
            prefs = S.preference_pairs(judged).iloc[:limit]
            typer.echo(f"{judged.summary['n_mismatches']} of {len(train)} train story pairs "
                       f"mismatch: training on {len(prefs)} preference pairs", err=True)
        else:
            prefs = given.iloc[:limit]
        if chosen is None:
            located = run_trace(m, pick(P.professions(m, "train"), 40, seed),
                                kinds=("mlp", "attn"), samples=3, seed=seed, progress=True)
            chosen, traced, why = choose_sites(located, "last")
            attn = traced if attn_layers is None else attn
            typer.echo(f"sites: MLP {chosen}, attention {attn}: {why}", err=True)
        e = run_dpo(m, prefs, layers=chosen, attn_layers=attn, beta=beta, epochs=epochs, lr=lr,
                    seed=seed, progress=True)
        before = S.story_consistency(m, test, seed=seed, progress=True)
        after = S.story_consistency(m, test, edit=e, seed=seed, progress=True)
    except InterpError as err:
        _fail(str(err))
    out.mkdir(parents=True, exist_ok=True)
    e.save(out / "edit.safetensors")
    typer.echo(repr(e))
    typer.echo(f"held-apart story pairs ({len(test)}): mismatch rate "
               f"{before.summary['mismatch_rate']:.3f} -> {after.summary['mismatch_rate']:.3f}")
    typer.echo(f"wrote {out / 'edit.safetensors'}")


def _bbq_items(items: str, split: str):
    from .studies import bbq_items as B

    _checked(check.choice, split, ("all", "train", "test"), "--split")
    if items != "ours":
        _checked(check.file, items, "BBQ items JSONL")
    frame = _checked(check.loaded, B.resolve, items)
    return frame if split == "all" else B.split(frame)[split == "test"]


def _personas(personas: Optional[str]):
    from .studies.bbq import DEFAULT_PERSONAS, PERSONAS

    if personas is None:
        return list(DEFAULT_PERSONAS)
    if personas.strip() == "all":
        return [p for p, _ in PERSONAS]
    chosen = [p.strip() for p in personas.split(",") if p.strip()]
    if not chosen:
        _fail("--personas is empty: give a comma list such as 'a woman,a Muslim person', or all")
    return chosen


ItemsOpt = typer.Option("ours", help="ours (1,000 BBQ-format items of our own), or BBQ's "
                                     "JSONL (context, question, ans0..ans2, label, "
                                     "context_condition, question_polarity, answer_info, "
                                     "additional_metadata).")
PersonasOpt = typer.Option(None, help="Comma list of personas ('a woman,a Muslim person'), "
                                      "or 'all' for our list; default: four, one each for "
                                      "gender, race, religion and age.")


@app.command()
def persona(
    model: Optional[str] = ModelOpt,
    items: str = ItemsOpt,
    split: str = typer.Option("all", help="all, or the train / test side of the split by "
                                          "whole scenarios."),
    personas: Optional[str] = PersonasOpt,
    choices: bool = typer.Option(False, help="List the answer choices in the prompt."),
    edit: Optional[Path] = typer.Option(None, help="An edit file (LSDM, DPO or AlignEZ) "
                                                   "applied while answering."),
    limit: Optional[int] = typer.Option(None, help="Answer at most N items (seeded sample)."),
    seed: int = typer.Option(0, help="Sampling and bootstrap seed."),
    out: Optional[Path] = typer.Option(None, help="Directory to save the result in."),
):
    """Persona bias on BBQ-format questions: accuracy, BBQ bias scores, TB, BAmt and PB without
    a persona and with each persona instruction (answers by likelihood)."""
    from .studies.bbq import persona_bias

    frame = _bbq_items(items, split)
    chosen = _personas(personas)
    _checked(check.at_least, limit, 1, "--limit")
    arch = _checked(check.model, model)
    kind = _checked(check.edit_file, edit, arch, representation_ok=True)
    m = _load(model)
    e = _matching(m, edit, kind)
    try:
        if limit:
            frame = frame.sample(n=min(limit, len(frame)), random_state=seed)
        result = persona_bias(m, frame, chosen, edit=e, choices=choices, seed=seed,
                              progress=True)
    except InterpError as e:
        _fail(str(e))
    typer.echo(result.scores().round(3).to_string())
    if out:
        result.save(out)


@app.command()
def alignez(
    model: Optional[str] = ModelOpt,
    items: str = ItemsOpt,
    layers: str = typer.Option(..., help="Comma list of layers to edit."),
    site: str = typer.Option("resid", help="resid (AlignEZ's residual stream; a hook, not "
                                           "exportable as weights), mlp or attn (folds into "
                                           "the output projection)."),
    k: int = typer.Option(1, help="Harmful directions per layer."),
    alpha: float = typer.Option(1.0, help="How much of the harmful component to remove."),
    beta: float = typer.Option(0.0, help="How much to amplify the helpful component."),
    center: bool = typer.Option(False, help="Act about the mean helpful state (a hook only: "
                                            "it does not fold into weights)."),
    personas: Optional[str] = PersonasOpt,
    limit: Optional[int] = typer.Option(None, help="Use at most N train and N test items."),
    seed: int = typer.Option(0, help="Sampling and bootstrap seed."),
    out: Path = typer.Option(Path("runs/alignez"), help="Directory for the edit files."),
):
    """AlignEZ representation edit: directions from the model's own biased and unbiased answers
    on the train side of the BBQ items, then BBQ bias on the held-apart side before and after."""
    from .mitigate.alignez import SITES
    from .mitigate.alignez import alignez as fit
    from .studies import bbq

    train, test = (_bbq_items(items, s) for s in ("train", "test"))
    _checked(check.choice, site, SITES, "--site")
    _checked(check.at_least, k, 1, "--k")
    _checked(check.at_least, limit, 1, "--limit")
    ps = _personas(personas)
    arch = _checked(check.model, model)
    chosen = _checked(check.layers, layers, arch, "--layers")
    m = _load(model)
    try:
        if limit:
            train, test = (f.sample(n=min(limit, len(f)), random_state=seed)
                           for f in (train, test))
        seen = bbq.persona_bias(m, train, ps, seed=seed, progress=True)
        helpful, harmful = bbq.contrasts(seen)
        e = fit(m, helpful, harmful, layers=chosen,
                k=k, alpha=alpha, beta=beta, site=site, center=center,
                source="bbq train split")
        before = bbq.persona_bias(m, test, ps, seed=seed, progress=True)
        after = bbq.persona_bias(m, test, ps, edit=e, seed=seed, progress=True)
    except InterpError as err:
        _fail(str(err))
    out.mkdir(parents=True, exist_ok=True)
    e.save(out / "representation_edit.safetensors")
    typer.echo(repr(e))
    if site != "resid" and not center:
        e.to_edit(m).save(out / "edit.safetensors")
        typer.echo(f"folded into weights: {out / 'edit.safetensors'}")
    cols = ["accuracy_ambig", "bias_ambig", "bias_disambig", "PB_ambig"]
    typer.echo("held-apart items, before:\n" + before.scores()[cols].round(3).to_string())
    typer.echo("after:\n" + after.scores()[cols].round(3).to_string())
    typer.echo(f"wrote {out / 'representation_edit.safetensors'}")


RayOpt = typer.Option(False, "--ray", help="Run on Ray: a local Ray started here (every core, "
                                           "or --workers), or the cluster at --ray-address. "
                                           "Needs pip install 'interp\\[ray]'.")
RayAddressOpt = typer.Option(None, "--ray-address", help="The Ray cluster to join (auto, "
                                                         "ray://host:10001, ...); implies --ray.")
WorkersOpt = typer.Option(None, "--workers", min=1, help="Ray workers (default: one per CPU).")


def _ray_options(ray: bool, address: Optional[str], workers: Optional[int]) -> dict:
    """count_corpus's and run_sweep's ray= and workers= from the command-line flags."""
    if workers is not None and not (ray or address):
        _fail("--workers sets the number of Ray workers: add --ray (or --ray-address)")
    if not (ray or address):
        return {}
    return {"ray": address or True, "workers": workers}


corpus_app = typer.Typer(no_args_is_help=True, help="Corpus co-occurrence of occupations with "
                                                     "gender terms.")
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("count")
def corpus_count(
    corpus: list[Path] = typer.Argument(..., help="Shards: text files, JSONL(.gz) with a text "
                                                  "field, datasets directories, or folders of "
                                                  "them."),
    window: str = typer.Option("sentence", help="sentence, or N: the N words on each side."),
    out: Path = typer.Option(Path("runs/corpus/counts.csv"), help="The table to write; shard "
                                                                  "counts go beside it, so a "
                                                                  "rerun resumes."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Count the readable shards and "
                                  "name the others, instead of stopping."),
    ray: bool = RayOpt,
    ray_address: Optional[str] = RayAddressOpt,
    workers: Optional[int] = WorkersOpt,
):
    """Count, per occupation, its mentions and the female and male terms in their windows."""

    from .studies.corpus import count_corpus

    try:
        w = window if window == "sentence" else int(window)
    except ValueError:
        _fail(f"--window must be 'sentence' or a number of words, not {window!r}")
    try:
        result = count_corpus(list(corpus), window=w, out=out.parent / (out.stem + "_shards"),
                              skip_bad=skip_bad, progress=True,
                              **_ray_options(ray, ray_address, workers))
    except InterpError as e:
        _fail(str(e))
    result.save(out)
    for s in result.meta["skipped"]:
        typer.echo(f"skipped: {s['error']}", err=True)
    typer.echo(result.frame.head(20).to_string(index=False))
    typer.echo(f"{result.meta['documents']} documents, {result.meta['characters']:,} characters "
               f"in {result.meta['n_shards']} shards ({result.meta['resumed']} resumed); wrote "
               f"{out}")


@corpus_app.command("compare")
def corpus_compare(
    counts: Path = typer.Argument(..., help="The table `interp corpus count` wrote."),
    model: Optional[str] = ModelOpt,
    min_mentions: int = typer.Option(5, help="Leave out occupations mentioned fewer times."),
    out: Optional[Path] = typer.Option(None, help="Directory for the table, summary and plot."),
):
    """Correlate the corpus' female share per occupation with the model's p(she) share, and fit
    the amplification slope (model against corpus)."""

    from .studies.corpus import CorpusCounts
    from .studies.corpus_compare import compare_corpus

    _checked(check.file, counts, "corpus counts CSV (from `interp corpus count`)")
    table = _checked(check.loaded, CorpusCounts.load, counts)
    _checked(check.at_least, min_mentions, 1, "--min-mentions")
    _checked(check.model, model)
    m = _load(model)
    try:
        result = compare_corpus(m, table, min_mentions=min_mentions)
    except (InterpError, OSError) as e:
        _fail(str(e))
    typer.echo(result.table())
    if out:
        result.save(out)
        save_figure(result.plot(), out / "amplification")


@app.command()
def edit(
    model: Optional[str] = ModelOpt,
    prompts: str = prompts_option("train", "Prompts to debias: train, all, or a JSONL file."),
    layers: Optional[str] = typer.Option(None, help="Comma list of MLP layers; default: trace "
                                                    "and take the suggested band."),
    attn_layers: Optional[str] = typer.Option(None, help="Comma list of layers whose attention "
                                              "output projection to edit as well."),
    lam: float = typer.Option(None, help="Weight of the preservation statistics (λ)."),
    templates: Optional[int] = TemplatesOpt,
    seed: int = typer.Option(0, help="Seed of prefixes, statistics samples and the trace."),
    site: str = typer.Option("last", help="Where keys and targets are: last (the prompt's "
                             "last token, the best recipe) or subject (the paper's last "
                             "subject token)."),
    preserve: Optional[str] = typer.Option(None, help="Prompts whose prediction must stay: a "
                                           "built-in set (e.g. definitional-train) or JSONL; "
                                           "default: definitional-train for site last."),
    preserve_weight: float = typer.Option(0.1, help="Weight of the preserved prompts' keys."),
    prefixes: Optional[int] = typer.Option(None, help="Generated prefixes per prompt (0: bare "
                                           "prompts; default 0 at the last token, 1 at the "
                                           "subject)."),
    out: Path = typer.Option(Path("runs/edit"), help="Output directory."),
    verify: bool = typer.Option(False, "--verify", help="Re-trace and evaluate before/after."),
):
    """Fit an LSDM edit (a closed-form update of the located MLP, and optionally attention,
    weights) and save it."""

    _checked(_check_prompt_options, prompts, templates, one=True)
    if preserve:
        _checked(_check_prompt_options, preserve, templates, one=True, option="--preserve")
    _checked(check_site, site)
    if lam is not None:
        _checked(check.positive, lam, "--lam")
    _checked(check.at_least, preserve_weight, 0, "--preserve-weight")
    _checked(check.at_least, prefixes, 0, "--prefixes")
    arch = _checked(check.model, model)
    chosen = _checked(check.layers, layers, arch, "--layers")
    attn = _checked(check.layers, attn_layers, arch, "--attn-layers")
    m = _load(model)
    ps = next(iter(build_prompt_sets(m, prompts, templates).values()))
    kw = {} if lam is None else {"lam": lam}
    if preserve:
        kw["preserve"] = next(iter(build_prompt_sets(m, preserve, templates).values()))
    try:
        located = None
        if chosen is None or verify:
            typer.echo("tracing the edit prompts to locate the edit's sites ...", err=True)
            located = run_trace(m, pick(ps.of_slot("subject"), 60, seed), kinds=("mlp", "attn"),
                                seed=seed, progress=True)
        if chosen is None:
            chosen, traced_attn, why = choose_sites(located, site)
            attn = traced_attn if attn is None else attn
            typer.echo(f"edit sites: MLP {chosen}, attention {attn}: {why}", err=True)
        typer.echo(f"fitting LSDM on {len(ps)} prompts, MLP layers {chosen}, attention "
                   f"{attn or []}, site {site} ...", err=True)
        e = lsdm(m, ps, layers=chosen, attn_layers=attn or [], site=site, n_prefixes=prefixes,
                 preserve_weight=preserve_weight, seed=seed, progress=True, **kw)
    except InterpError as err:
        _fail(str(err))
    out.mkdir(parents=True, exist_ok=True)
    e.save(out / "edit.safetensors")
    typer.echo(repr(e))
    typer.echo(f"targets: {e.meta['targets']}")
    typer.echo(f"wrote {out / 'edit.safetensors'}")
    if verify:
        _verify_and_save(m, e, located, out)


def _verify_and_save(m, e, located, out: Path) -> None:
    """--verify: re-trace `located`'s prompts with the edit, evaluate before/after, save the
    verification and its figure under `out`, print the table."""
    v = run_verify(m, e, located, progress=True)
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
    steps: int = typer.Option(150, help="Optimiser steps of the ft and cda recipes."),
    lr: float = typer.Option(1e-4, help="Learning rate of the ft and cda recipes."),
    seed: int = typer.Option(0, help="Seed of the fit (and of --verify's trace)."),
    out: Path = typer.Option(Path("runs/debias"), help="Output directory."),
    verify: bool = typer.Option(False, "--verify", help="Re-trace and evaluate before/after."),
):
    """Debias with the recipe validated for this model (benchmarks/mitigations.py chose it on
    a validation part of held-out sentences; interp/data/validated.csv) and say which it ran
    and why. Writes the edit file, which `evaluate` and `export` take."""
    _checked(check.choice, recipe, ("auto", *RECIPES), "--recipe")
    _checked(check.at_least, steps, 1, "--steps")
    _checked(check.positive, lr, "--lr")
    _checked(check.model, model)
    m = _load(model)
    try:
        e = run_debias(m, recipe, steps=steps, lr=lr, seed=seed, progress=True)
    except InterpError as err:
        _fail(str(err))
    typer.echo(f"ran {e.meta['chosen']}")
    out.mkdir(parents=True, exist_ok=True)
    e.save(out / "edit.safetensors")
    typer.echo(repr(e))
    typer.echo(f"wrote {out / 'edit.safetensors'}")
    if verify:
        located = run_trace(m, pick(P.professions(m, "train"), 60, seed), kinds=("mlp", "attn"),
                            seed=seed, progress=True)
        _verify_and_save(m, e, located, out)


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

    from .export.result import DTYPES as EXPORT_DTYPES
    from .export.result import FORMATS

    _checked(check.choice, format, FORMATS, "--format")
    _checked(check.choice, dtype, EXPORT_DTYPES[format], f"--dtype of a {format} export")
    if format == "hf" and out.is_file():
        _fail(f"{out} is a file, but an hf export is a directory: pick a new path")
    if format != "hf" and out.is_dir():
        _fail(f"{out} is a directory, but a {format} export is one file: give a file name, "
              f"e.g. {out / ('model.' + format)}")
    arch = _checked(check.model, model)
    if format == "gguf" and arch.model_type not in GGUF_ARCHITECTURES:
        _fail(f"interp writes GGUF for {', '.join(GGUF_ARCHITECTURES)}, not {arch.model_type}: "
              "export with --format hf or safetensors")
    kind = _checked(check.edit_file, edit, arch)
    m = _load(model)
    e = _matching(m, edit, kind)
    try:
        r = export(m, out, format, dtype=dtype, edit=e, verify=verify)
    except InterpError as e:
        _fail(str(e))
    typer.echo(r.summary())


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

    from .sweep.run import check_sweep

    options = _ray_options(ray, ray_address, workers)
    _checked(check.file, config, "sweep config (TOML)")
    _checked(check_sweep, config, out)
    try:
        if options:
            result = run_sweep_ray(config, out, address=options["ray"],
                                   workers=options["workers"], progress=True)
        else:
            result = run_sweep(config, out, progress=True)
    except InterpError as e:
        _fail(str(e))
    typer.echo(result.summary())
    typer.echo(f"\nwrote {result.out}/ (results.csv, cells/<id>/, baseline.json, config.toml)")


@app.command()
def demo(
    out: Optional[Path] = typer.Option(None, help="Where results and exports go (default "
                                       "runs/demo, or runs/demo-MODEL for another model)."),
    figures: Optional[Path] = typer.Option(None, help="Where figures go (default figures/, or "
                                           "figures/MODEL/ for another model)."),
    trace_prompts: int = typer.Option(30, help="Train prompts to trace (seeded sample)."),
    export_gguf: bool = typer.Option(True, help="Also export the edited model as GGUF, where "
                                     "its family has a GGUF layout."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Another model than the "
                                        "bundled one: gemma-3-270m, a path, or tiny-llama "
                                        "(every step in seconds)."),
):
    """The whole loop on the bundled model (or --model): trace train prompts, fit the recipe
    validated for the model (interp.debias; where none was, LSDM at the last token at the sites
    the trace chose), fit the paper's subject edit for comparison, re-trace and evaluate
    before/after (bias on held-out sentence shapes first), export, and write figures and a
    report."""
    _checked(check.at_least, trace_prompts, 1, "--trace-prompts")
    _checked(check.model, model)
    start = time.time()
    slug = None if model is None else Path(model).stem.replace(" ", "-")
    out = out or Path("runs/demo" if slug is None else f"runs/demo-{slug}")
    figures = figures or Path("figures" if slug is None else f"figures/{slug}")

    def step(name):
        typer.secho(f"\n[{time.time() - start:5.0f} s] {name}", bold=True, err=True)

    step(f"load {model or 'the bundled SmolLM2-135M-Instruct'}")
    m = _load(model)
    typer.echo(repr(m))
    to_trace = pick(P.professions(m, "train", templates=P.TEMPLATES[:1]), trace_prompts, 0)
    step(f"trace {len(to_trace)} train prompts (noise corruption, every layer and token)")
    located = run_trace(m, to_trace, kinds=("resid", "mlp", "attn"), samples=3, seed=0,
                        progress=True)
    mlp_layers, attn_layers, why = last_token_sites(located)
    typer.echo(f"edit sites: MLP {mlp_layers} and attention {attn_layers}, because {why}")
    choice, _ = lookup_validated(m)
    if choice is not None:
        # the recipe benchmarks/mitigations.py chose for this model on a validation part
        step(f"fit {choice.recipe}, the recipe validated for this model, on the train "
             f"occupations (interp.debias; {choice.table})")
        edit = run_debias(m, progress=True)
        typer.echo(f"ran {edit.meta['chosen']}")
        why = (f"they are the recipe's (the top six MLPs and its attention layers); the trace "
               f"chose MLP {mlp_layers} and attention {attn_layers}, because {why}")
    else:
        # every fitting context: the subject-pronoun templates and the object/possessive ones,
        # with the train-split definitional words kept in the same contexts ("auto")
        train = P.contexts(m, "train")
        n_templates = len({p.template for p in train})
        step(f"fit LSDM at the last token on {len(train.subjects())} train occupations × "
             f"{n_templates} contexts (definitional train words preserved; no recipe was "
             "validated for this model)")
        edit = lsdm(m, train, layers=mlp_layers, attn_layers=attn_layers, site="last",
                    n_prefixes=0, preserve="auto", preserve_weight=0.1, seed=0, progress=True)
    out.mkdir(parents=True, exist_ok=True)
    edit.save(out / "edit.safetensors")
    typer.echo(repr(edit))
    subject_layers = located.suggest_layers("mlp")
    step(f"for comparison, the paper's edit: the last subject token, MLP {subject_layers}")
    paper = lsdm(m, P.professions(m, "train", templates=EDIT_TEMPLATES), layers=subject_layers,
                 site="subject", seed=0, progress=True)
    paper.save(out / "paper_edit.safetensors")
    with paper.applied(m):
        paper_report = run_eval(m, ("shapes", "occupations"), progress=True)
    step("re-trace with the edit and evaluate before/after (held-out sentence shapes, test "
         "occupations, definitional, facts, perplexity, KL)")
    v = run_verify(m, edit, located, progress=True)
    v.save(out / "verification")
    typer.echo(v.table())
    step("export the edited model")
    exports = []
    with edit.applied(m):
        exports.append(export(m, out / "export" / "hf", "hf", edit=edit))
        if export_gguf and m.arch.model_type in GGUF_ARCHITECTURES:
            exports.append(export(m, out / "export" / f"{slug or 'smollm2-135m'}-debiased.f16.gguf",
                                  "gguf", dtype="f16", edit=edit))
        elif export_gguf:
            typer.echo(f"no GGUF export: interp writes GGUF for {', '.join(GGUF_ARCHITECTURES)}, "
                       f"not {m.arch.model_type}")
    for r in exports:
        typer.echo(r.summary())
    step("figures and report")
    written = demo_report(v, edit, located, exports, out=out, figures=figures,
                          seconds=time.time() - start, save_figure=save_figure,
                          why=why, paper=(paper, paper_report))
    typer.echo(headline(v.before, v.after, paper_report))
    typer.echo("\n".join(f"wrote {p}" for p in written))
    typer.echo(f"\ndemo finished in {time.time() - start:.0f} s")


def run(argv: Optional[list[str]] = None) -> int:
    """The command line as a function: run `argv` (default: sys.argv[1:]) and return the exit
    code. Every error is one line on stderr: usage and input errors exit 2, an interrupt 130,
    anything else 1; `--debug` shows the traceback instead."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        # standalone_mode=False: errors come here instead of click's multi-line usage box, and
        # typer.Exit(code) comes back as the return value.
        code = typer.main.get_command(app).main(args=argv, prog_name="interp",
                                                standalone_mode=False)
        code = code if isinstance(code, int) else 0
    except typer.Exit as e:
        code = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = 130
    except typer.TyperException as e:  # click's usage errors: a bad option or argument
        ctx = getattr(e, "ctx", None)
        command = (f"interp {ctx.info_name} --help" if ctx is not None and ctx.parent
                   else "interp --help")
        _say(f"{e.format_message()} (see {command})")
        return 2
    except InterpError as e:
        if debug:
            raise
        _say(str(e))
        return 2
    except Exception as e:
        if debug:
            raise
        text = str(e).splitlines()[0] if str(e) else ""
        _say(f"{type(e).__name__}: {text} (an internal error: rerun with --debug for the "
             "traceback and report it)")
        return 1
    if code == 130:  # Ctrl-C: click turns the KeyboardInterrupt into this exit code
        _say("interrupted: results are written whole or not at all, so nothing is half-written")
    return code


def _say(message: str) -> None:
    typer.secho(f"error: {' '.join(message.split())}", fg=typer.colors.RED, err=True)


def main() -> None:  # pragma: no cover - console entry
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(run())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
