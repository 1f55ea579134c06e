"""The error type export code raises for problems a user can fix (bad option, no checkpoint, a file it
cannot read back); its message is one line."""
from cips_edge.core.errors import UserError


class ExportError(UserError):
    pass
