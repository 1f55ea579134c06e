"""The one exception type for problems a user can fix (bad file, bad option, no CUDA, ...)."""
from __future__ import annotations

import re
from collections.abc import Callable


class UserError(Exception):
    """Its message is one line for the user; the CLI prints it on stderr and exits non-zero.

    params: the parameters the message is about, by their Python names, each mentioned first as a
    whole word: UserError("chunk must be at least 1 point, got 0", params="chunk"). str() is the
    message as written, for Python callers; a face whose options are spelled otherwise shows its own
    names through spelled() (the CLI: "--chunk must be at least 1 point, got 0")."""

    def __init__(self, message: str, *, params: str | tuple[str, ...] = ()):
        super().__init__(message)
        self.params = (params,) if isinstance(params, str) else tuple(params)
        assert all(_first(name).search(message) for name in self.params), (self.params, message)

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with the first mention of each parameter replaced by spell(name)."""
        text = str(self)
        for name in self.params:
            text = _first(name).sub(lambda _: spell(name), text, count=1)
        return text


def _first(name: str) -> re.Pattern:
    # a whole word, and not one already spelled as an option (--devices must not match devices)
    return re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")
