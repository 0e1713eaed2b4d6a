"""One family of errors that a person can act on.

Every error raised on purpose by Cadenza is a :class:`CadenzaError` whose message is one
line saying what went wrong and what to do. The CLI prints that line (no traceback) and
exits 2; the web server maps it to a 4xx/503 response (see ``assistant/errors.py``).
"""

from __future__ import annotations


class CadenzaError(Exception):
    """Base class: ``str(err)`` is a single actionable line."""

    #: HTTP status the web layer answers with.
    status_code: int = 400


class ConfigError(CadenzaError):
    """Bad configuration: an unreachable database, an unwritable home, a bad variable."""

    status_code = 500


class DatabaseUnavailable(CadenzaError):
    """The database cannot be reached right now (restart, outage); retry later."""

    status_code = 503


class InputError(CadenzaError):
    """Bad input from a user: an undecodable file, a clip too short, a bad parameter."""

    status_code = 400


class NotFound(CadenzaError):
    status_code = 404


class StorageError(CadenzaError):
    """The server could not write what a request needs (disk full, uploads folder not a folder)."""

    status_code = 507  # Insufficient Storage: the request was fine, retrying later may work


class ModelMismatch(CadenzaError):
    """The library was embedded by another model than the one loaded (a reindex ran under a live
    server): nothing can be found until they agree, and an operator can fix that."""

    status_code = 503
