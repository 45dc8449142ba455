"""The mistakes a user can make and fix, as exception types.

Each carries one message that names the key (or path) and what is valid; the `red` verbs
print it alone, exit with status 2, and never show a traceback for it.
"""

from __future__ import annotations


class UserError(ValueError):
    """A problem with what the user asked for; the message says which key and how to fix it."""


class ConfigError(UserError):
    """A config value that composes but cannot be run."""


class DatasetError(UserError):
    """A dataset the user pointed at cannot be used."""


class EvalError(UserError):
    """A problem with `red eval` / `red explain` inputs (a missing run, a mismatched resume)."""


class ReportError(UserError):
    """`red report` found nothing it can report."""


class JudgeError(UserError):
    """A judge cannot be used (endpoint unreachable, refused request)."""


class Interrupted(UserError):
    """The run stopped on request (Ctrl-C, SIGTERM) after writing a checkpoint."""


class NonFinite(UserError):
    """A NaN or infinity appeared in training; the message names the quantity and iteration."""
