"""``boldc show FILE``: verify an IR file and print it in canonical form."""

from __future__ import annotations

import click

from boldc.commands.common import FILE
from boldc.fileio import load
from boldc.ir.printer import dumps


@click.command("show")
@click.argument("file", type=FILE)
@click.option("--no-weights", is_flag=True, help="Print the structure only (no resources section).")
def command(file, no_weights: bool) -> None:
    """Verify FILE (.bir) and print it in canonical text form.

    The output is itself a valid IR file: with weights it is a copy of the module."""
    module = load(file)
    click.echo(dumps(module, weights=not no_weights), nl=False)
