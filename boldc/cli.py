"""The ``boldc`` command line.

Commands live in ``boldc/commands/<name>.py`` (each defines a click command named
``command``) and are imported only when used, so ``boldc --version`` stays fast and
a command's heavy imports (onnx, cffi) cost nothing elsewhere. A command whose
module does not exist yet is simply not offered.

User errors (``BoldcError``, bad flags, unreadable files) print one line on stderr
and exit with code 2; Ctrl-C exits with 130. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from boldc import __version__
from boldc.errors import BoldcError

# command name -> module defining ``command`` (in the order ``boldc --help`` lists them)
COMMANDS = {
    "convert": "boldc.commands.convert",
    "show": "boldc.commands.show",
    "run": "boldc.commands.run",
    "compile": "boldc.commands.compile",
    "train": "boldc.commands.train",
    "eval": "boldc.commands.evaluate",
    "energy": "boldc.commands.energy",
}


def _available() -> list[str]:
    return [name for name, mod in COMMANDS.items() if importlib.util.find_spec(mod) is not None]


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return _available()

    def get_command(self, ctx, name):
        if name not in COMMANDS or importlib.util.find_spec(COMMANDS[name]) is None:
            return None
        return importlib.import_module(COMMANDS[name]).command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="boldc", message="%(prog)s %(version)s")
def cli() -> None:
    """boldc: compile float ONNX models into Boolean neural networks (BOLD method)."""


def main(argv: list[str] | None = None) -> int:
    try:
        # a command that raises click's Exit (train's 130 after Ctrl-C) makes click return its code
        code = cli.main(args=argv, prog_name="boldc", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("boldc: interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("boldc: interrupted", err=True)
        return 130
    except click.ClickException as exc:
        # click's usage errors, made one line; the hint tells where to look.
        sub = f" {exc.ctx.info_name}" if getattr(exc, "ctx", None) and exc.ctx.parent else ""
        msg = " ".join(exc.format_message().split())
        click.echo(f"boldc{sub}: error: {msg} (see 'boldc{sub} --help')", err=True)
        return 2
    except BoldcError as exc:
        msg = str(exc)
        # Parser and verifier messages already read "file:line:col: error: ...".
        click.echo(f"boldc: {msg}" if ": error: " in msg else f"boldc: error: {msg}", err=True)
        return 2
    return code if isinstance(code, int) else 0


def entry() -> None:
    sys.exit(main())
