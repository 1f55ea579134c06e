"""`cips train`: the training entry (cips_edge.train, needs torch) with its own options."""
from __future__ import annotations

import typer

from cips_edge.core.errors import first_line

from .common import fail


def train(ctx: typer.Context) -> None:
    """Train a generator (the paper's recipe); same options as `python -m cips_edge.train --help`."""
    from cips_edge.train.__main__ import main as train_main  # the options: no torch needed

    # --help works after `pip install cips-edge[cpu]`; a run needs torch, and one that fails to import
    # (missing, or a broken install) is one line, not a traceback
    if not {"-h", "--help"} & set(ctx.args):
        try:
            import torch  # noqa: F401
        except ImportError as e:
            fail(f"training needs torch, which cannot be imported ({first_line(e)}): pip install torch==2.13.0 "
                 "'cips-edge[train]'")
    raise typer.Exit(train_main(ctx.args, prog="cips train"))


# the training entry parses every argument itself, --help included
SETTINGS = dict(context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False)
