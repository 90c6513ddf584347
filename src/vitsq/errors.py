"""Exceptions raised for bad user input.

Every error that a user can cause (bad text, bad speaker, corrupt file, unsupported
recipe/backend pair, ...) is a :class:`VitsqError`. The CLI turns these into a one-line
message and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class VitsqError(Exception):
    """Base class for errors caused by the caller's input, not by a bug."""


class InputError(VitsqError, ValueError):
    """Bad text, speaker id, scales or other argument."""


class ModelLoadError(VitsqError):
    """A model file is missing, corrupt, or does not match its config."""


class UnsupportedError(VitsqError):
    """A valid request that this model/backend/recipe combination cannot serve."""


class OutputError(InputError):
    """An output path that cannot be written safely (exists, wrong kind, not writable, busy)."""
