"""What went wrong with one download attempt, and whether trying again can help.

* :class:`Transient` - the site pushed back (429/503/5xx), the connection broke or timed
  out: retried with backoff, counted by the site's circuit breaker; ``failed`` when the
  attempts run out.
* :class:`Permanent` - trying again cannot help: a 404 (``failed``), or content that is
  not media (``rejected`` when ``rejected`` is true).

yt-dlp raises ``DownloadError`` for everything. A 4xx/5xx on the first request carries an
``HTTPError`` with ``.status`` in ``exc_info``; after a failure mid-download the status is
only in the message text; the paced ``urlopen`` (see ``downloader``) also notes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PUSHBACK = frozenset({429, 503})
_HTTP_STATUS = re.compile(r"HTTP Error (\d{3})")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NOT_MEDIA = ("Unsupported URL", "No video formats found", "no suitable formats", "Requested format is not")


class Transient(Exception):
    def __init__(self, reason: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retry_after = retry_after


class Permanent(Exception):
    def __init__(self, reason: str, *, rejected: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rejected = rejected


@dataclass
class AttemptNotes:
    """What the paced ``urlopen`` saw during one attempt (the last HTTP error wins)."""

    status: int | None = None
    retry_after: float | None = None
    skipped: str | None = None  # why yt-dlp's match filter skipped the download


def clean_message(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    if text.startswith("ERROR: "):
        text = text[len("ERROR: ") :]
    return " ".join(text.split())[:300]


def status_of(exc: BaseException, notes: AttemptNotes | None = None) -> int | None:
    """The HTTP status behind a yt-dlp error, wherever it is kept."""
    if notes is not None and notes.status is not None:
        return notes.status
    exc_info = getattr(exc, "exc_info", None)
    inner = exc_info[1] if exc_info else None
    for candidate in (inner, getattr(exc, "orig_msg", None), exc):
        status = getattr(candidate, "status", None)
        if isinstance(status, int):
            return status
    match = _HTTP_STATUS.search(str(exc))
    return int(match.group(1)) if match else None


def classify(exc: BaseException, notes: AttemptNotes | None = None) -> Transient | Permanent:
    """Map a yt-dlp (or other) exception from one attempt to Transient or Permanent."""
    if isinstance(exc, Transient | Permanent):
        return exc
    message = clean_message(exc)
    status = status_of(exc, notes)
    retry_after = notes.retry_after if notes is not None else None
    if status is not None:
        if status in PUSHBACK or status >= 500 or status == 408:
            return Transient(f"HTTP {status}: {message}", status=status, retry_after=retry_after)
        return Permanent(f"HTTP {status}: {message}")
    if any(marker in message for marker in _NOT_MEDIA):
        return Permanent(f"not audio: {message}", rejected=True)
    # Resets, timeouts, short reads, DNS trouble and anything unknown: worth another try.
    return Transient(message or type(exc).__name__)


def is_site_failure(exc: BaseException) -> bool:
    """Does this failure say something about the site's health (for the circuit breaker)?"""
    return isinstance(exc, Transient)
