"""Commands of the studies: audit, stories, dpo, persona, alignez, corpus count / compare."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .. import command_inputs as check
from ..common.errors import InputError
from ..common.figures import save_figure
from ..common.frames import sample_rows
from ..mitigate.alignez import SITES as ALIGNEZ_SITES
from ..mitigate.alignez import alignez
from ..mitigate.dpo import dpo as fit_dpo
from ..measure import audit_items
from ..studies import bbq_items
from ..studies import stories as S
from ..studies.bbq import DEFAULT_PERSONAS, PERSONAS, persona_bias
from ..studies.corpus_compare import compare_corpus
from ..studies.debiasing import persona_alignez, story_dpo
from ..studies.reward import reward_audit
from .common import (ModelOpt, RayAddressOpt, RayOpt, WorkersOpt, app, default_of, fail,
                     load, matching, ray_options)


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
    beta: float = typer.Option(default_of(reward_audit, "beta"),
                               help="β of the implicit reward."),
    limit: Optional[int] = typer.Option(None, help="Audit at most N items (seeded sample)."),
    seed: int = typer.Option(0, help="Sampling and bootstrap seed."),
    out: Optional[Path] = typer.Option(None, help="Directory to save the audit in."),
):
    """Implicit-reward audit: which continuations the policy prefers over the reference, per
    identity group (TGNB vs binary), with bootstrap intervals and paired tests."""

    if reference is None and edit is None:
        fail("give --reference, or --edit to audit an edit against the unedited model")
    if tango and items in ("disclosure", "misgendering"):
        fail(f"--tango reads TANGO's misgendering CSV: give its path as --items, not {items!r}")
    if not tango and items not in ("disclosure", "misgendering"):
        check.file(items, "audit items CSV")
    elif tango:
        check.file(items, "TANGO misgendering CSV")
    frame = check.loaded(audit_items.misgendering if tango else audit_items.resolve, items)
    check.positive(beta, "--beta")
    check.at_least(limit, 1, "--limit")
    arch = check.model(policy)
    if reference is not None:
        check.model(reference)
    kind = check.edit_file(edit, arch)
    pol = load(policy)
    e = matching(pol, edit, kind)
    ref = pol if reference is None else load(reference)
    result = reward_audit(pol, ref, sample_rows(frame, limit, seed), beta=beta, seed=seed,
                          progress=True, edit=e)
    typer.echo(result.table())
    typer.echo(result.tables["identities"].round(4).to_string(index=False))
    if out:
        result.save(out)


def study_items(given: str, split: str, what: str, module):
    """A study's items (`module`: stories or bbq_items): ours, or the published file `given`
    (`what` it must be), whole or one side of the module's split."""
    check.choice(split, ("all", "train", "test"), "--split")
    if given != "ours":
        check.file(given, what)
    frame = check.loaded(module.resolve, given)
    return frame if split == "all" else module.split(frame)[split == "test"]


def story_pairs(pairs: str, split: str):
    return study_items(pairs, split, "GenMO story-pairs JSON", S)


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

    frame = story_pairs(pairs, split)
    check.at_least(limit, 1, "--limit")
    arch = check.model(model)
    kind = check.edit_file(edit, arch)
    m = load(model)
    e = matching(m, edit, kind)
    result = S.story_consistency(m, sample_rows(frame, limit, seed), seed=seed, progress=True,
                                 edit=e)
    typer.echo(result.table())
    if out:
        result.save(out)


@app.command()
def dpo(
    model: Optional[str] = ModelOpt,
    pairs: str = typer.Option("ours", help="ours, or GenMO's JSON: preference pairs come from "
                                           "the train side of the split, the held-apart side "
                                           "is measured before and after."),
    limit: int = typer.Option(default_of(story_dpo, "limit"),
                              help="Preference pairs to train on at most."),
    preferences: Optional[Path] = typer.Option(None, help="Train on these preference pairs "
                                               "instead (a CSV with prompt, chosen, "
                                               "rejected)."),
    layers: Optional[str] = typer.Option(None, help="Comma list of MLP layers to train; "
                                                    "default: trace, as `interp edit` does."),
    attn_layers: Optional[str] = typer.Option(None, help="Comma list of layers whose "
                                              "attention output projection to train."),
    beta: float = typer.Option(default_of(fit_dpo, "beta"), help="DPO's β."),
    epochs: int = typer.Option(default_of(fit_dpo, "epochs"),
                               help="Passes over the preference pairs."),
    lr: float = typer.Option(default_of(fit_dpo, "lr"), help="Adam's learning rate."),
    seed: int = typer.Option(0, help="Seed of the trace and the batches."),
    out: Path = typer.Option(Path("runs/dpo"), help="Output directory."),
):
    """Preference debiasing: DPO on the model's own story-pair inconsistencies (chosen: the
    judgement both versions share; rejected: the one that departs), training the weights an
    LSDM edit would change. Saves the change as an edit file."""

    train, test = story_pairs(pairs, "train"), story_pairs(pairs, "test")
    given_pairs = None
    if preferences is not None:
        given_pairs = check.csv_columns(preferences, ("prompt", "chosen", "rejected"),
                                        "preference pairs")
    check.at_least(limit, 1, "--limit")
    check.at_least(epochs, 1, "--epochs")
    check.positive(beta, "--beta")
    check.positive(lr, "--lr")
    arch = check.model(model)
    chosen = check.layers(layers, arch, "--layers")
    attn = check.layers(attn_layers, arch, "--attn-layers")
    m = load(model)
    result = story_dpo(m, train, test, preferences=given_pairs, limit=limit, layers=chosen,
                       attn_layers=attn, beta=beta, epochs=epochs, lr=lr, seed=seed,
                       progress=True, log=lambda text: typer.echo(text, err=True))
    out.mkdir(parents=True, exist_ok=True)
    result.edit.save(out / "edit.safetensors")
    typer.echo(repr(result.edit))
    typer.echo(result.summary())
    typer.echo(f"wrote {out / 'edit.safetensors'}")


def bbq_frame(items: str, split: str):
    return study_items(items, split, "BBQ items JSONL", bbq_items)


def personas_of(personas: Optional[str]) -> list[str]:
    if personas is None:
        return list(DEFAULT_PERSONAS)
    if personas.strip() == "all":
        return [p for p, _ in PERSONAS]
    chosen = [p.strip() for p in personas.split(",") if p.strip()]
    if not chosen:
        fail("--personas is empty: give a comma list such as 'a woman,a Muslim person', or all")
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
    frame = bbq_frame(items, split)
    chosen = personas_of(personas)
    check.at_least(limit, 1, "--limit")
    arch = check.model(model)
    kind = check.edit_file(edit, arch, representation_ok=True)
    m = load(model)
    e = matching(m, edit, kind)
    result = persona_bias(m, sample_rows(frame, limit, seed), chosen, edit=e, choices=choices,
                          seed=seed, progress=True)
    typer.echo(result.scores().round(3).to_string())
    if out:
        result.save(out)


@app.command("alignez")
def alignez_cmd(
    model: Optional[str] = ModelOpt,
    items: str = ItemsOpt,
    layers: str = typer.Option(..., help="Comma list of layers to edit."),
    site: str = typer.Option(default_of(alignez, "site"), help="resid (AlignEZ's residual "
                             "stream; a hook, not exportable as weights), mlp or attn (folds "
                             "into the output projection)."),
    k: int = typer.Option(default_of(alignez, "k"), help="Harmful directions per layer."),
    alpha: float = typer.Option(default_of(alignez, "alpha"),
                                help="How much of the harmful component to remove."),
    beta: float = typer.Option(default_of(alignez, "beta"),
                               help="How much to amplify the helpful component."),
    center: bool = typer.Option(default_of(alignez, "center"),
                                help="Act about the mean helpful state (a hook only: it does "
                                     "not fold into weights)."),
    personas: Optional[str] = PersonasOpt,
    limit: Optional[int] = typer.Option(None, help="Use at most N train and N test items."),
    seed: int = typer.Option(0, help="Sampling and bootstrap seed."),
    out: Path = typer.Option(Path("runs/alignez"), help="Directory for the edit files."),
):
    """AlignEZ representation edit: directions from the model's own biased and unbiased answers
    on the train side of the BBQ items, then BBQ bias on the held-apart side before and after."""
    train, test = (bbq_frame(items, s) for s in ("train", "test"))
    check.choice(site, ALIGNEZ_SITES, "--site")
    check.at_least(k, 1, "--k")
    check.at_least(limit, 1, "--limit")
    ps = personas_of(personas)
    arch = check.model(model)
    chosen = check.layers(layers, arch, "--layers")
    m = load(model)
    result = persona_alignez(m, train, test, ps, layers=chosen, limit=limit, seed=seed,
                             progress=True, k=k, alpha=alpha, beta=beta, site=site,
                             center=center)
    out.mkdir(parents=True, exist_ok=True)
    result.edit.save(out / "representation_edit.safetensors")
    typer.echo(repr(result.edit))
    if site != "resid" and not center:
        result.edit.to_edit(m).save(out / "edit.safetensors")
        typer.echo(f"folded into weights: {out / 'edit.safetensors'}")
    typer.echo(result.summary())
    typer.echo(f"wrote {out / 'representation_edit.safetensors'}")


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

    from ..studies.corpus import count_corpus

    try:
        w = window if window == "sentence" else int(window)
    except ValueError:
        fail(f"--window must be 'sentence' or a number of words, not {window!r}")
    result = count_corpus(list(corpus), window=w, out=out.parent / (out.stem + "_shards"),
                          skip_bad=skip_bad, progress=True,
                          **ray_options(ray, ray_address, workers))
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
    min_mentions: int = typer.Option(default_of(compare_corpus, "min_mentions"),
                                     help="Leave out occupations mentioned fewer times."),
    out: Optional[Path] = typer.Option(None, help="Directory for the table, summary and plot."),
):
    """Correlate the corpus' female share per occupation with the model's p(she) share, and fit
    the amplification slope (model against corpus)."""

    from ..studies.corpus import CorpusCounts

    check.file(counts, "corpus counts CSV (from `interp corpus count`)")
    table = check.loaded(CorpusCounts.load, counts)
    check.at_least(min_mentions, 1, "--min-mentions")
    check.model(model)
    m = load(model)
    try:
        result = compare_corpus(m, table, min_mentions=min_mentions)
    except OSError as e:
        raise InputError(str(e)) from e
    typer.echo(result.table())
    if out:
        result.save(out)
        save_figure(result.plot(), out / "amplification")
