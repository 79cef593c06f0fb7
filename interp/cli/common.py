"""What every command shares: the app, the global options, loading the model and edit files,
prompt sets by name, and one way to refuse bad input (`fail`)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from .. import command_inputs as check
from ..common.errors import InputError, InterpError
from ..measure import prompts as P
from ..measure.contrast import PARTS as CONTRAST_PARTS
from ..measure.contrast import contrast as read_contrast
from ..mitigate.edit import Edit
from ..model.load import load_model



class Commands(TyperGroup):
    """The command group: an `InterpError` from any command (bad input, or a computation that
    cannot be done) is one line and exit code 2, however the app is invoked; with --debug it
    propagates with its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except InterpError as e:
            if ctx.params.get("debug"):
                raise
            say(str(e))
            raise typer.Exit(code=2) from None


app = typer.Typer(cls=Commands, add_completion=False, no_args_is_help=True,
                  help="Locate where a language model carries social bias and remove it.")

ModelOpt = typer.Option(None, "--model", "-m",
                        help="Bundled model (default), a .gguf file, an HF directory or hub name, "
                             "or tiny-<model_type> (tiny-llama, tiny-gemma3_text, ...).")
TemplatesOpt = typer.Option(None, help="Use only the first N built-in templates.")
RayOpt = typer.Option(False, "--ray", help="Run on Ray: a local Ray started here (every core, "
                                           "or --workers), or the cluster at --ray-address. "
                                           "Needs pip install 'interp\\[ray]'.")
RayAddressOpt = typer.Option(None, "--ray-address", help="The Ray cluster to join (auto, "
                                                         "ray://host:10001, ...); implies --ray.")
WorkersOpt = typer.Option(None, "--workers", min=1, help="Ray workers (default: one per CPU).")


def prompts_option(default: str, help: str):
    return typer.Option(default, "--prompts", "-p", help=help)


ContrastOpt = typer.Option(None, "--contrast", help="Another bias axis than he/she: a built-in "
                           "(interp contrasts) or a .toml/.json contrast file; --prompts then "
                           "names its part (train, test, all) or a JSONL file.")


def contrast_option(name: Optional[str], prompts: str, option: str = "--prompts"):
    """The contrast a --contrast names (None: he/she), read before any model loads, with its
    --prompts checked: a part of the contrast (train, test, all) or a JSONL file."""
    if name is None:
        return None
    chosen = read_contrast(name)
    if prompts not in CONTRAST_PARTS:
        check.file(Path(prompts), f"{option} file")
    return chosen


def contrast_prompts(model, chosen, prompts: str):
    """A contrast's prompts: its part (train, test, all) or a JSONL file's records (with
    slot, group and declared where the contrast needs them)."""
    if prompts in CONTRAST_PARTS:
        return chosen.prompts(model, prompts)
    return P.from_jsonl(model, prompts)


def default_of(function, name: str):
    """The library's default of `function`'s parameter `name`: an option that mirrors it takes
    its default from there, not from a copy."""
    return inspect.signature(function).parameters[name].default


def fail(message: str):
    """Refuse with one line and exit code 2 (`interp.cli.run` prints it)."""
    raise InputError(message)


def say(message: str) -> None:
    typer.secho(f"error: {' '.join(message.split())}", fg=typer.colors.RED, err=True)


# Where and in what precision every command loads its model (the global options).
DTYPES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16"}
LOADING = {"device": None, "dtype": "f32"}


@app.callback()
def options(
    device: Optional[str] = typer.Option(None, help="Where to run: cpu, cuda, cuda:1, ... "
                                         "(default: cuda when there is one, else cpu)."),
    dtype: str = typer.Option("f32", help="Weights' precision: f32, bf16 or f16 (bf16/f16 "
                              "halve the memory; results then differ in the 3rd digit)."),
    debug: bool = typer.Option(False, "--debug", help="Show the traceback of an error."),
):
    """Locate where a language model carries social bias and remove it."""
    if dtype not in DTYPES:
        fail(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if device is not None:
        import torch

        try:
            dev = torch.device(device)
        except RuntimeError:
            fail(f"--device {device!r} is not a device: use cpu, cuda or cuda:N")
        if dev.type == "cuda" and not torch.cuda.is_available():
            fail(f"--device {device}: this machine has no CUDA GPU that torch can use; "
                 "leave --device out to run on the CPU")
        if dev.type not in ("cpu", "cuda"):
            fail(f"--device {device!r}: interp runs on cpu or cuda")
    LOADING.update(device=device, dtype=dtype)


def load_options() -> dict:
    """`interp.load_model`'s device and dtype, as the global options set them."""
    import torch

    return {"device": LOADING["device"], "dtype": getattr(torch, DTYPES[LOADING["dtype"]])}


def load(model: Optional[str]):
    """Load the model; every command checks its input (`interp.command_inputs`) first."""
    return load_model(model, **load_options())


def matching(m, edit_path: Optional[Path], kind: Optional[str]):
    """The edit file (its header checked before the load: `kind` from `check.edit_file`) loaded
    and held to the loaded model's exact weights (its fingerprint), before any compute."""
    from ..mitigate.alignez import RepresentationEdit

    if edit_path is None:
        return None
    try:
        e = (RepresentationEdit if kind == "representation" else Edit).load(edit_path)
        e.check_model(m)
    except InterpError as err:
        if str(edit_path) in str(err):
            raise
        raise InputError(f"{edit_path}: {err}") from err
    return e


def check_prompt_options(prompts: str, templates: Optional[int], *, one: bool = False,
                         option: str = "--prompts") -> None:
    check.prompt_sets(prompts, one=one, option=option)
    check.at_least(templates, 1, "--templates")
    if templates is not None and templates > len(P.TEMPLATES):
        fail(f"--templates {templates}: there are {len(P.TEMPLATES)} built-in templates")


def prompt_sets(model, names: str, templates: Optional[int] = None) -> dict:
    """{name: PromptSet} from a comma list of built-in names or JSONL paths (`P.named`; a
    file's set is named after its stem); `templates` keeps the first N built-in templates."""
    chosen = P.TEMPLATES[:templates] if templates else None
    sets = {}
    for name in [n.strip() for n in names.split(",") if n.strip()]:
        ps = P.named(model, name, templates=chosen)
        sets[name if name in P.BUILTIN_SETS else Path(name).stem] = ps
    if not sets:
        fail("no prompt sets given")
    for ps in sets.values():
        if ps.dropped:
            typer.echo(f"{ps.name}: {ps.drop_summary()}", err=True)
    return sets


def one_prompt_set(model, name: str, templates: Optional[int] = None):
    return next(iter(prompt_sets(model, name, templates).values()))


def ray_options(ray: bool, address: Optional[str], workers: Optional[int]) -> dict:
    """count_corpus's and run_sweep's ray= and workers= from the command-line flags."""
    if workers is not None and not (ray or address):
        fail("--workers sets the number of Ray workers: add --ray (or --ray-address)")
    if not (ray or address):
        return {}
    return {"ray": address or True, "workers": workers}


def given(**values) -> dict:
    """The options a user gave (not None): passed on, so the library's defaults apply to the
    others."""
    return {k: v for k, v in values.items() if v is not None}
