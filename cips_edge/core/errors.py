"""The one exception type for problems a user can fix (bad file, bad option, no CUDA, ...)."""


class UserError(Exception):
    """Its message is one line for the user; the CLI prints it on stderr and exits non-zero."""
