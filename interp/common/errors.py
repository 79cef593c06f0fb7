"""Errors that tell the user what went wrong and what to do about it.

Every error raised on bad input derives from `InterpError`, so callers can catch the whole family.
"""

from __future__ import annotations


class InterpError(Exception):
    """Base class of every error `interp` raises on bad input."""


class ModelLoadError(InterpError):
    """A model spec could not be turned into a loaded model."""


class UnsupportedArchitectureError(InterpError):
    """The model's architecture has no adapter: we do not know where its MLP or attention are."""


class TokenizationError(InterpError):
    """A word that must be one token is not, or a prompt does not tokenize as required."""


class TemplateError(InterpError):
    """A prompt template is malformed, e.g. it lacks the `{}` slot for the subject."""


class EmptyPromptSetError(InterpError):
    """A computation was asked for over no prompts."""


class InputError(InterpError):
    """A file or option given to a command that cannot be used; found before any model loads."""
