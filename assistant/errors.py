"""The one exception-to-response mapping of the web app.

:class:`~cadenza.errors.CadenzaError` subclasses answer with their ``status_code``; an unreachable
database (psycopg ``OperationalError``, pool timeout) answers 503. Requests under ``/api`` get JSON
``{"error": ..., "status": ...}``; htmx requests (``HX-Request``) get a small HTML partial; other
pages get a full error page.
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


def _respond(request: Request, status: int, message: str) -> Response:
    path = request.url.path
    # A 503 is temporary by definition: say when to come back (clients and the openai/yt-dlp style
    # retry loops honour it).
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None
    if (
        path.startswith("/api")
        or "application/json" in request.headers.get("accept", "")
        and not request.headers.get("hx-request")
    ):
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
    if status == 413:
        message = (
            "the upload is too large; attach a shorter clip (the limit is set by CADENZA_MAX_UPLOAD_BYTES)"
        )
    extra = getattr(exc, "extra", None)
    if status == 400 and extra:
        message = f"{message}: {extra}"
    return _respond(request, status, message)


HANDLERS = {
    CadenzaError: cadenza_error,
    psycopg.OperationalError: database_down,
    PoolTimeout: database_down,
    HTTPException: http_error,
}
