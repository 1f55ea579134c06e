"""What every command shares: one-line errors with the runtime's parameter names spelled as flags,
the packaged model, and progress on stderr."""
from __future__ import annotations

import functools
import time
from pathlib import Path

import typer

from cips_edge.core.errors import Interrupted, UserError
from cips_edge.core.format import packaged_model


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def flag(name: str) -> str:
    """A library parameter's option: chunk -> --chunk, fovea_radius -> --fovea-radius."""
    return "--" + name.replace("_", "-")


def user_errors(flags: dict[str, str] | None = None):
    """Every problem a user can cause ends as one line on stderr and exit 1, never a traceback; the
    parameters an error names are spelled as this command's options (flags: where they differ from
    flag(name))."""
    flags = flags or {}

    def spell(name: str) -> str:
        return flags.get(name) or flag(name)

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            try:
                return command(*args, **kwargs)
            except UserError as e:
                fail(e.spelled(spell))
            except MemoryError:
                fail("out of memory: render fewer points at once (--chunk) or a smaller image")
            except Interrupted as e:  # a streamed render says what it kept (runtime/stream.py)
                fail(e.spelled(spell), 130)
            except KeyboardInterrupt:  # every file is written whole or not at all (core.files)
                fail("interrupted: no file is left half-written", 130)
        return wrapper
    return decorate


def model_path(model: Path | None) -> Path:
    """--model, or the packaged model."""
    if model is not None:
        return model
    path = packaged_model()
    if not path.is_file():
        raise UserError("no model is packaged with cips-edge yet (cips_edge/models/default.onnx); pass --model "
                        "PATH.onnx (make one with `cips export model.onnx --checkpoint CKPT`)")
    return path


def open_model(model: Path | None, device: str, threads: int = 0, precision: str | None = None):
    """The CIPSModel of --model (or the packaged one) on --device with --threads and --precision."""
    from cips_edge.runtime import CIPSModel

    return CIPSModel(model_path(model), device=device, threads=threads, precision=precision)


class Progress:
    """Progress of long or multi-seed renders on stderr: a rich bar on a terminal; elsewhere (a pipe, a
    log file) a start line when the first work lands (so a command refused before any work prints only
    its error), then a plain line whenever another tenth is done, at most one every
    PLAIN_LINE_EVERY_S. Nothing when not `show`. A runtime ProgressFactory: Progress(total, show, unit)."""

    PLAIN_LINE_EVERY_S = 30.0

    def __init__(self, total: int, show: bool, unit: str = "pixels"):
        self.total, self.show, self.unit, self.bar = total, show, unit, None

    def __enter__(self):
        if not self.show:
            return None
        from rich.console import Console  # imported only here: a short command need not load rich

        console = Console(stderr=True)
        if console.is_terminal:
            from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn("rendering"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                           TimeRemainingColumn(), console=console, transient=True)
            self.bar.start()
            task = self.bar.add_task("render", total=self.total)
            return lambda n: self.bar.advance(task, n)
        self.start = self.last_line = time.perf_counter()
        self.done, self.tenths, self.started = 0, 0, False
        return self._plain

    def _plain(self, n: int) -> None:
        if not self.started:  # once, however many calls report nothing done yet
            self.started = True
            typer.echo(f"rendering {self.total:,} {self.unit}", err=True)
        self.done += n
        tenths = self.done * 10 // max(self.total, 1)
        now = time.perf_counter()
        if tenths > self.tenths and self.done < self.total and now - self.last_line >= self.PLAIN_LINE_EVERY_S:
            self.tenths, self.last_line = tenths, now
            elapsed = now - self.start
            left = elapsed * (self.total - self.done) / self.done
            share = 100 * self.done // self.total
            typer.echo(f"rendering: {share}% of {self.total:,} {self.unit} after {elapsed:.0f} s, "
                       f"about {left:.0f} s left", err=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

