"""`cips train`: the training entry (cips_edge.train, needs torch) with its own options."""
from __future__ import annotations

import typer

from .common import fail


def train(ctx: typer.Context) -> None:
    """Train a generator (the paper's recipe); same options as `python -m cips_edge.train --help`."""
    try:
        from cips_edge.train.__main__ import main as train_main
    except ImportError as e:
        fail(f"training needs torch ({e.name} is missing): pip install torch==2.13.0 'cips-edge[train]'")
    raise typer.Exit(train_main(ctx.args, prog="cips train"))


# the training entry parses every argument itself, --help included
SETTINGS = dict(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
