"""Progress bars for the metrics: rich on stderr (stdout stays free for tables and JSON), or nothing."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def track(items: Iterable[T], description: str, enabled: bool, total: int | None = None) -> Iterator[T]:
    console = None
    if enabled:
        from rich.console import Console
        console = Console(stderr=True)
    if console is None or not console.is_terminal:  # a log file gets no bars (they would leave blank lines)
        yield from items
        return
    from rich.progress import track as rich_track
    yield from rich_track(items, description=description, total=total, console=console, transient=True)
