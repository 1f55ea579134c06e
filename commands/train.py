"""`cips train`: the training entry (cips_edge.train, needs torch) with its own options."""
from __future__ import annotations

import importlib.util

import typer

from .common import fail


def train(ctx: typer.Context) -> None:
    """Train a generator (the paper's recipe); same options as `python -m cips_edge.train --help`."""
    try:
        from cips_edge.train.__main__ import main as train_main
    except ImportError as e:
        _needs_torch(e.name)
    # the options parse without torch (--help works after `pip install cips-edge[cpu]`); a run needs it
    if importlib.util.find_spec("torch") is None and not {"-h", "--help"} & set(ctx.args):
        _needs_torch("torch")
    raise typer.Exit(train_main(ctx.args, prog="cips train"))


def _needs_torch(missing: str | None) -> None:
    fail(f"training needs torch ({missing} is missing): pip install torch==2.13.0 'cips-edge[train]'")


# the training entry parses every argument itself, --help included
SETTINGS = dict(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
