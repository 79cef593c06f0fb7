"""What can go wrong in an export.
"""

from __future__ import annotations

from ..common.errors import InterpError, UnsupportedArchitectureError


class ExportError(InterpError):
    """A model cannot be exported as asked."""


class UnsupportedExportError(ExportError, UnsupportedArchitectureError):
    """The model's architecture (or one of its features) has no writer for this format."""


class VerificationError(ExportError):
    """The export does not reproduce the in-memory model; nothing was written."""
