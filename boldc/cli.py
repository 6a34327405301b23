"""The ``boldc`` command line.

Commands live in ``boldc/commands/<name>.py`` (each defines a click command named
``command``) and are imported only when used, so ``boldc --version`` stays fast and
a command's heavy imports (onnx, cffi) cost nothing elsewhere. A command whose
module does not exist yet is simply not offered.

User errors (``BoldcError``, bad flags, unreadable files) print one line on stderr,
in one form for every command (``error_line``), and exit with code 2; Ctrl-C exits
with 130, however many times it is pressed. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import signal
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


# "file:line:col: error: what" or "file: error: what" (the parser's and the verifier's
# messages, compiler style)
_LOCATED = re.compile(r"^(?P<where>[^:]+(?::\d+:\d+)?): error: ")


def error_line(exc: BaseException) -> str:
    """The one line a user error prints: ``boldc: error: WHERE: WHAT``, where WHERE is
    the file (``file:line:col`` for IR text) or the option (``--batch``), and a usage
    error ends with the help to read (``(see 'boldc train --help')``)."""
    if isinstance(exc, click.ClickException):
        return f"boldc: error: {_usage_text(exc)}"
    msg = str(exc)
    return f"boldc: error: {_LOCATED.sub(lambda m: m['where'] + ': ', msg, count=1)}"


def _usage_text(exc: click.ClickException) -> str:
    """click's usage errors as WHERE: WHAT (see HELP)."""
    ctx = getattr(exc, "ctx", None)
    sub = f" {ctx.info_name}" if ctx is not None and ctx.parent is not None else ""
    hint = f" (see 'boldc{sub} --help')"
    param = getattr(exc, "param", None)
    if isinstance(exc, click.MissingParameter) and param is not None:
        kind = "argument" if isinstance(param, click.Argument) else "option"
        return f"{_param_name(param)}: required {kind} missing{hint}"
    if isinstance(exc, click.BadParameter) and param is not None and exc.message:
        return f"{_param_name(param)}: {_sentence(exc.message)}{hint}"
    if isinstance(exc, click.NoSuchOption):
        close = f"; did you mean {', '.join(exc.possibilities)}?" if exc.possibilities else ""
        return f"{exc.option_name}: no such option of 'boldc{sub}'{close}{hint}"
    if type(exc).__name__ == "NoSuchCommand" and getattr(exc, "command_name", None):
        return f"{exc.command_name}: no such command (commands: {', '.join(_available())}){hint}"
    where = sub.strip() or "boldc"
    return f"{where}: {_sentence(exc.format_message())}{hint}"


def _param_name(param: click.Parameter) -> str:
    """``--batch`` for an option (its long name), ``MODEL`` for an argument."""
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return param.human_readable_name.upper()


def _sentence(text: str) -> str:
    """One line, without click's final full stop (the hint follows)."""
    return " ".join(text.split()).removesuffix(".")


def main(argv: list[str] | None = None) -> int:
    try:
        # a command that raises click's Exit (train's 130 after Ctrl-C) makes click return its code
        code = cli.main(args=argv, prog_name="boldc", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("boldc: interrupted", err=True)
        return 130
    except (click.ClickException, BoldcError) as exc:
        click.echo(error_line(exc), err=True)
        return 2
    return code if isinstance(code, int) else 0


def _interrupt_once(signum, frame) -> None:
    """SIGINT handler of the ``boldc`` process: the first Ctrl-C interrupts (KeyboardInterrupt,
    which the commands turn into exit 130 with their files intact); later ones are
    ignored, so a second Ctrl-C cannot cut that clean-up short or end the process by
    the signal instead of with 130."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def entry() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when the caller ignores SIGINT
        signal.signal(signal.SIGINT, _interrupt_once)
    try:
        code = main()
    except KeyboardInterrupt:  # raised between main's handlers (a Ctrl-C during the report of one)
        code = 130
    sys.exit(code)
