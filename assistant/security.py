"""Web hardening mounted on the app: CSRF, security headers, per-client rate limiting.

``litestar_options(settings)`` returns the keyword arguments ``create_app`` passes to ``Litestar``.

CSRF (Litestar's ``CSRFConfig``, double submit): the ``csrftoken`` cookie is HttpOnly; pages carry
the token in ``<body hx-headers>`` (htmx sends it as ``X-CSRFToken`` on every request) and plain
forms carry it as the hidden ``_csrf_token`` field (``{{ csrf_input }}``), so no script ever reads
the cookie. The JSON API under ``/api/`` is exempt on purpose: it is for non-browser clients and
authorizes nothing by cookie. The only cookie it reads is the listener id, which tags a conversation
(it grants no access to anything), and both our cookies are ``SameSite=Lax``, so a cross-site POST
from another page does not carry them anyway.

Rate limiting counts only state-changing requests (POST, PUT, PATCH, DELETE): those decode uploads
and run searches; GETs of pages, static files and audio ranges are cheap and a playing page makes
many. The key is the client address; over the limit the answer is 429 with ``Retry-After``.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections import OrderedDict, deque
from typing import Any

from litestar.config.csrf import CSRFConfig
from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.types import ASGIApp, HTTPResponseStartEvent, Message, Receive, Scope, Send

from cadenza.settings import Settings

#: No inline script, no eval, no foreign origins, no framing. htmx is configured for this
#: (``allowEval: false``, no indicator styles); pictures are inline SVG without style attributes.
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"microphone=(self), camera=(), geolocation=()"),
)

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


async def add_security_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: :data:`SECURITY_HEADERS` on every HTTP response.

    A hook rather than a middleware: Litestar runs middleware only for matched routes, while this
    also reaches the router's own 404/405 answers.
    """
    if message["type"] == "http.response.start":
        headers = list(message.get("headers") or [])
        present = {bytes(k).lower() for k, _ in headers}
        headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
        message["headers"] = headers


class RateLimitMiddleware:
    """At most ``per_minute`` state-changing requests per client address in any 60-s window.

    A sliding window of timestamps per client, kept in this instance (one per app); the table is
    bounded (least recently seen clients are dropped) so a flood of addresses cannot grow it.
    """

    def __init__(
        self, app: ASGIApp, *, per_minute: int, max_clients: int = 10_000, window_s: float = 60.0
    ) -> None:
        self.app = app
        self.per_minute = per_minute
        self.window_s = window_s
        self.max_clients = max_clients
        self.hits: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, client: str, now: float) -> float | None:
        """Seconds to wait, or None (and the hit is counted) when the request may go ahead."""
        q = self.hits.get(client)
        if q is None:
            q = self.hits[client] = deque()
            while len(self.hits) > self.max_clients:
                self.hits.popitem(last=False)
        self.hits.move_to_end(client)
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if len(q) >= self.per_minute:
            return q[0] + self.window_s - now
        q.append(now)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != ScopeType.HTTP
            or self.per_minute <= 0
            or scope.get("method") not in UNSAFE_METHODS
        ):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.retry_after(client, time.monotonic())
        if wait is None:
            await self.app(scope, receive, send)
            return
        seconds = max(1, math.ceil(wait))
        message = f"too many requests from your address; wait {seconds} s and try again"
        headers = dict((k.lower(), v) for k, v in scope.get("headers", []))
        if scope.get("path", "").startswith("/api") or not headers.get(b"hx-request"):
            body = json.dumps({"error": message, "status": 429}).encode()
            ctype = b"application/json"
        else:
            body = f'<div class="error" role="alert"><strong>Sorry —</strong> {message}</div>'.encode()
            ctype = b"text/html; charset=utf-8"
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(seconds).encode()),
            ],
        }
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": False})


def csrf_config(settings: Settings) -> CSRFConfig:
    # Without a configured secret each process signs its own tokens: a restart asks pages to reload.
    secret = settings.server.secret or secrets.token_hex(32)
    return CSRFConfig(
        secret=secret,
        cookie_httponly=True,
        cookie_samesite="lax",
        cookie_secure=settings.server.secure_cookies,
        exclude=["^/api/"],
    )


def litestar_options(settings: Settings) -> dict[str, Any]:
    """``Litestar(**litestar_options(settings))``: CSRF, security headers and rate limiting."""
    return {
        "csrf_config": csrf_config(settings),
        "before_send": [add_security_headers],
        "middleware": [DefineMiddleware(RateLimitMiddleware, per_minute=settings.limits.requests_per_minute)],
    }
