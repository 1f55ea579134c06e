"""The exception types for problems a user can fix (bad file, bad option, no CUDA, ...) and for a long
write stopped by Ctrl-C."""
from __future__ import annotations

import re
from collections.abc import Callable


class _Named:
    """A one-line message that may be about parameters.

    params: the parameters the message is about, by their Python names, in the order of their first
    mentions as whole words: UserError("chunk must be at least 1 point, got 0", params="chunk"). A
    name given twice stands for its first two mentions. str() is the message as written, for Python
    callers; a face whose options are spelled otherwise shows its own names through spelled() (the
    CLI: "--chunk must be at least 1 point, got 0")."""

    def __init__(self, message: str, *, params: str | tuple[str, ...] = ()):
        super().__init__(message)
        self.params = (params,) if isinstance(params, str) else tuple(params)
        assert len(_mentions(message, self.params)) == len(self.params), (self.params, message)

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with each parameter mention replaced by spell(name)."""
        text = str(self)
        for start, end, name in reversed(_mentions(text, self.params)):
            text = text[:start] + spell(name) + text[end:]
        return text


def _mentions(text: str, params: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """(start, end, name) of each parameter's mention: for a name given k times, its first k whole-word
    occurrences outside paths and file names (no /, \\ or . next to it) and not already an option (--x)."""
    found = []
    for name in dict.fromkeys(params):
        spans = [m.span() for m in re.finditer(rf"(?<![\w\-/\\.]){re.escape(name)}(?![\w\-/\\.])", text)]
        found += [(*span, name) for span in spans[:params.count(name)]]
    return sorted(found)


def first_line(error: BaseException, limit: int = 300) -> str:
    """An exception's first line (the reason a library gives), at most limit characters; its type's name
    when it has no text."""
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:limit]


class UserError(_Named, Exception):
    """Its message is one line for the user; the CLI prints it on stderr and exits non-zero."""


class Interrupted(_Named, KeyboardInterrupt):
    """Ctrl-C during a long write; the message says what is kept and how to continue."""
