"""The one exception-to-response mapping of the web app.

:class:`~cadenza.errors.CadenzaError` subclasses answer with their ``status_code``; an unreachable
database (psycopg ``OperationalError``, pool timeout) answers 503. Requests under ``/api`` get JSON
``{"error": ..., "status": ...}``; htmx requests (``HX-Request``) get a small HTML partial; other
pages get a full error page.

Input the lower layers cannot take is a 400 here too, wherever it surfaces: a NUL character bound
for PostgreSQL (psycopg refuses it while sending), JSON nested past Python's recursion limit, a form
field that is not UTF-8 (Litestar's multipart parser raises in the CSRF middleware already). Any
other exception is a bug: logged with its traceback, answered with a generic 500 that shows nothing
of it.
"""

from __future__ import annotations

import logging
from html import escape

import psycopg
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException
from psycopg_pool import PoolTimeout

from cadenza.errors import CadenzaError

log = logging.getLogger(__name__)

DB_DOWN = (
    "the database is not reachable right now; try again in a moment (an operator should check PostgreSQL)"
)


#: Seconds a client should wait before retrying a 503 (database down, every search slot busy).
RETRY_AFTER_S = 5


#: Paths whose every answer is JSON, errors included: the API, and the health check that
#: monitors parse.
JSON_PATHS = ("/api", "/healthz")

NUL_IN_INPUT = "the request contains a NUL character (\\0), which no text field may hold; remove it"
TOO_DEEP = "the JSON body is nested too deeply; send a flat object"
NOT_UTF8 = "a form field is not UTF-8 text; send text fields as UTF-8"
FORM_PART_TOO_LARGE = (
    "a form part's header is too long or the form has too many parts; "
    "rename the file to a shorter name (a few hundred characters at most) and send one clip"
)
INTERNAL = "something went wrong on the server (it is logged); try again, and tell an operator if it persists"


def wants_json(request: Request) -> bool:
    """Whether an error for ``request`` is answered as JSON (else HTML)."""
    if request.url.path.startswith(JSON_PATHS):
        return True
    return "application/json" in request.headers.get("accept", "") and not request.headers.get("hx-request")


def _respond(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    # A 503 is temporary by definition: say when to come back (clients and the openai/yt-dlp style
    # retry loops honour it).
    if status == 503:
        headers = {**(headers or {}), "Retry-After": str(RETRY_AFTER_S)}
    if wants_json(request):
        return Response(
            {"error": message, "status": status},
            status_code=status,
            media_type=MediaType.JSON,
            headers=headers,
        )
    body = f'<div class="error" role="alert"><strong>Sorry —</strong> {escape(message)}</div>'
    if not request.headers.get("hx-request"):
        body = (
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>Cadenza: error</title>"
            '<link rel="stylesheet" href="/static/app.css"></head><body><main>'
            + body
            + '<p><a href="/">Back to the chat</a></p></main></body></html>'
        )
    return Response(body, status_code=status, media_type=MediaType.HTML, headers=headers)


def respond(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """An error answer built by a controller itself (e.g. 416 with its Content-Range), in the same
    shape as every other error."""
    return _respond(request, status, message, headers)


def cadenza_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CadenzaError)
    return _respond(request, exc.status_code, str(exc))


def database_down(request: Request, exc: Exception) -> Response:
    log.warning("database unavailable: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
    return _respond(request, 503, DB_DOWN)


def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    message = str(exc.detail)
    if status >= 500 and status != 503:  # raised by the framework on our behalf: a bug all the same
        log.error("server error on %s %s", request.method, request.url.path, exc_info=exc)
        message = INTERNAL
    if status == 413:
        message = (
            "the upload is too large; attach a shorter clip (the limit is set by CADENZA_MAX_UPLOAD_BYTES)"
        )
    elif status == 400 and message == "Request Entity Too Large":
        # Litestar's multipart parser says this (as a 400) for a part header past its limit,
        # which in practice is a file name of thousands of characters.
        message = FORM_PART_TOO_LARGE
    extra = getattr(exc, "extra", None)
    if status == 400 and extra:
        message = f"{message}: {extra}"
    return _respond(request, status, message)


def data_error(request: Request, exc: Exception) -> Response:
    # psycopg refuses a NUL while adapting a parameter, before anything reaches the server.
    if "NUL" in str(exc):
        return _respond(request, 400, NUL_IN_INPUT)
    return unexpected(request, exc)


def too_deep(request: Request, exc: Exception) -> Response:
    return _respond(request, 400, TOO_DEEP)


def not_utf8(request: Request, exc: Exception) -> Response:
    return _respond(request, 400, NOT_UTF8)


def unexpected(request: Request, exc: Exception) -> Response:
    """A bug: the traceback goes to the server log, the client gets a generic line."""
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return _respond(request, 500, INTERNAL)


HANDLERS = {
    CadenzaError: cadenza_error,
    psycopg.OperationalError: database_down,
    PoolTimeout: database_down,
    psycopg.DataError: data_error,
    RecursionError: too_deep,
    UnicodeDecodeError: not_utf8,
    HTTPException: http_error,
    Exception: unexpected,
}
