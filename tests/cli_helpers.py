"""Running the `cips` command in-process for tests (typer's CliRunner), shared by the CLI test files."""
from __future__ import annotations

from typer.testing import CliRunner

import cips_edge.cli as cli

runner = CliRunner()


def cips(*args):
    """`cips ARGS...` in-process; returns typer's Result (exit_code, stdout, stderr)."""
    return runner.invoke(cli.app, [str(a) for a in args])


def ok(result) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout
