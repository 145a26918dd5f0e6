"""Export errors: one line naming the problem and the fix; the CLI prints it and exits 2."""
from __future__ import annotations

from autocnn.errors import AutocnnError


class ExportError(AutocnnError):
    """An export that cannot be done as asked; nothing was written."""


class CodegenError(AutocnnError):
    """Code autocnn cannot write into a standalone model.py (the message names the definition)."""
