"""Command line: `interp info|bias|trace|edit|debias|evaluate|export|sweep|demo` and the studies.

Each command parses its options, checks them (`interp.command_inputs`) before any model loads,
calls the library and prints. The commands live by group: `measure` (info, bias, trace,
evaluate), `edit` (edit, debias, export, sweep, demo), `studies` (audit, stories, dpo, persona,
alignez, corpus).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from ..common.errors import InterpError
# Each module adds its commands to `app`, in this order in `interp --help`.
from . import measure  # noqa: F401, I001
from . import studies  # noqa: F401
from . import edit  # noqa: F401
from .common import app, say

__all__ = ["app", "main", "run"]


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
        say(f"{e.format_message()} (see {command})")
        return 2
    except InterpError as e:
        if debug:
            raise
        say(str(e))
        return 2
    except Exception as e:
        if debug:
            raise
        text = str(e).splitlines()[0] if str(e) else ""
        say(f"{type(e).__name__}: {text} (an internal error: rerun with --debug for the "
            "traceback and report it)")
        return 1
    if code == 130:  # Ctrl-C: click turns the KeyboardInterrupt into this exit code
        say("interrupted: results are written whole or not at all, so nothing is half-written")
    return code


def main() -> None:  # pragma: no cover - console entry
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(run())
