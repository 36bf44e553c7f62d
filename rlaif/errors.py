"""The few user-facing error types.

A ``UserError`` is something the user can fix (a bad file, a bad option, a database held by someone else). The
CLI prints its one line and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by input the user controls; ``str()`` is the one line shown to them."""

    exit_code = 2


class ConfigError(UserError):
    """A bad setting, option or input file."""


class ConstitutionError(UserError):
    """A constitution file that fails to parse or validate.

    Carries the file, line and field so the message reads ``harmless.yaml:14: principles[3].revision_request:
    Field required``.
    """

    def __init__(self, file: str, line: int | None, field: str, message: str):
        self.file, self.line, self.field, self.message = file, line, field, message
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


class TemplateError(UserError):
    """A prompt template with an unknown placeholder, or one left unfilled at render time."""


class StoreError(UserError):
    """The database cannot be opened or a query was refused (locked, read-only sandbox, bad SQL)."""

    exit_code = 3


class EngineError(UserError):
    """The engine cannot be reached or set up (server down after bounded retries, missing model files)."""

    exit_code = 4
