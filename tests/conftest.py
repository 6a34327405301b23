from __future__ import annotations

from pathlib import Path

import pytest

from boldc.cli import main

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def cli(capsys):
    """Run ``boldc ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
