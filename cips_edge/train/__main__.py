"""`python -m cips_edge.train DATA [--options]`: the launcher-friendly entry, so torchrun can start
training on several GPUs (torchrun --nproc_per_node 8 -m cips_edge.train DATA --out RUN ...).
The options are TrainOptions' fields, with their help texts."""
from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
from pathlib import Path

from .options import AUGMENT_MODES, TrainError, TrainOptions

_TYPES = {"int": int, "float": float, "str": str, "Path": Path}


def _batch(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number or auto: {text!r}") from None


class _DefaultsHelp(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help, except where the help already states its default or
    the default is None (whose meaning, such as "the preset's", the help text gives)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """Usage errors as one `error:` line, as every other cips command gives them (not argparse's usage
    block first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} ({self.prog} --help lists the options)\n")


def build_parser(prog: str = "python -m cips_edge.train", defaults: bool = True) -> argparse.ArgumentParser:
    """The command line of TrainOptions; defaults=False leaves options that are not given out of the result."""
    default = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    parser = _Parser(
        prog=prog, formatter_class=_DefaultsHelp,
        description="Train a CIPS generator on a folder or zip of images (the paper's recipe). "
                    "Several GPUs: torchrun --nproc_per_node N -m cips_edge.train DATA ...")
    for f in dataclasses.fields(TrainOptions):
        help_text = f.metadata.get("help", "")
        kind = str(f.type).replace(" | None", "")
        if f.name == "data":
            # DATA positional or --data DIR: both spellings are in use (torchrun lines, the issue text)
            # (an absent optional positional is always set, to its default: None stands for not given)
            parser.add_argument("data", nargs="?", type=Path, default=None, help=help_text)
            parser.add_argument("--data", dest="data_option", type=Path, default=default(None), metavar="DATA",
                                help="same as the positional DATA")
        elif f.name == "metrics":  # a comma-separated list; TrainOptions splits it
            parser.add_argument("--metrics", dest="metrics", default=default(None), type=str, help=help_text)
        elif f.name == "batch":  # a number, or auto
            parser.add_argument("--batch", dest="batch", default=default(f.default), type=_batch, metavar="N|auto",
                                help=help_text)
        elif kind == "bool":
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=default(f.default),
                                action=argparse.BooleanOptionalAction, help=help_text)
        else:
            choices = AUGMENT_MODES if f.name == "augment" else None
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=default(f.default),
                                type=_TYPES[kind], choices=choices, help=help_text)
    return parser


def parse_options(argv: list[str] | None = None, prog: str = "python -m cips_edge.train") -> TrainOptions:
    """Command line -> TrainOptions (argparse exits with a usage error on bad syntax)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    given = args.data_option
    del args.data_option
    if given is not None:
        if args.data is not None and args.data != given:
            parser.error("give the data set once: either DATA or --data")
        args.data = given
    return TrainOptions(**vars(args))


def given_options(argv: list[str] | None = None) -> set[str]:
    """The TrainOptions fields named on the command line (a resume takes these instead of the run's)."""
    given = {name for name, value in vars(build_parser(defaults=False).parse_args(argv)).items()
             if not (name == "data" and value is None)}
    if "data_option" in given:
        given = (given - {"data_option"}) | {"data"}
    return given


def main(argv: list[str] | None = None, prog: str = "python -m cips_edge.train") -> int:
    try:
        options = parse_options(argv, prog)
        from . import run

        run(options, explicit=given_options(argv))
    except TrainError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        # A full disk (or quota) while writing samples, logs or options: one line, not a traceback.
        # The run keeps its newest checkpoint (checkpoints themselves report through TrainError).
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: cannot write {e.filename or 'a file of the run'}: {e.strerror}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # One rank of several (torchrun): the run's files are written and its process group destroyed.
        # The interpreter's teardown is skipped, as torch's collective backends can abort a rank while
        # their threads are torn down at exit, which torchrun reports as a failed run.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
