"""Hostile values and the checks every answer to them must pass (used by tests/test_fuzz.py).

Each value comes as text (for JSON and query strings) and as raw bytes (for multipart fields), so a
field is tried both as what a careless client sends and as what no decoder should trust.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

#: Text values: NUL and other control characters, a lone surrogate (JSON can carry it as an
#: escape), right-to-left and zero-width marks, markup, SQL and path tricks, long names.
HOSTILE_TEXT: tuple[str, ...] = (
    "\x00",
    "a\x00b",
    "\x01\x02\x1b[31m\x7f",
    "\r\n\r\nX-Injected: 1",
    "\u202e\u200b\ufeff",
    "<script>alert(1)</script>",
    "'; DROP TABLE tracks; --",
    "../../../../etc/passwd",
    "%00%ff",
    "1e400",
    "-1",
    "NaN",
    "Infinity",
    "0x10",
    "9" * 40,
    "a" * 5_000,
)

#: Raw bytes for multipart fields: not UTF-8, overlong and surrogate encodings, a lone BOM.
HOSTILE_BYTES: tuple[bytes, ...] = (
    b"\xff\xfe",
    b"\xc0\x80",
    b"\xed\xa0\x80",  # a UTF-16 surrogate encoded as if it were a character
    b"\xef\xbb\xbf",
    b"\x00" * 3,
    b"\x80abc",
)

#: JSON values for fields that expect numbers, ids, lists or objects.
HOSTILE_JSON: tuple[Any, ...] = (
    None,
    True,
    False,
    -1,
    0,
    1.9,
    10**30,
    -(10**30),
    1e308,
    "1",
    "\x00",
    [],
    {},
    [1, "a", None],
    {"track_id": True},
    ["\x00"],
)

#: Raw JSON texts no well-formed client sends (Python's encoder cannot make all of them).
HOSTILE_JSON_TEXTS: tuple[bytes, ...] = (
    b"[" * 5000 + b"]" * 5000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"message": "\\ud800"}',
    b'{"message": "x", "k": 1e400}',
    b'{"reference": {"track_id": NaN}}',
    b'{"reference": {"track_id": Infinity, "start": -Infinity}}',
    b'{"k": 1, "k": "two"}',
    b"\xff\xfe{",
    b"null",
    b"[]",
    b'"just a string"',
    b"",
)

#: Content-Types a client may claim for any body.
ODD_CONTENT_TYPES: tuple[str, ...] = (
    "application/json; charset=latin-1",
    "text/plain",
    "application/xml",
    "application/x-www-form-urlencoded",
    "multipart/form-data",  # no boundary
    "multipart/form-data; boundary=",
    "multipart/mixed; boundary=x",
    "application/octet-stream",
    "image/png",
)

#: Statuses the server may answer on purpose when it cannot serve (database down, full disk).
DESIGNED_5XX = frozenset({503, 507})

_TRACE = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+|psycopg\.|RecursionError")


def wants_json(path: str, headers: dict[str, str]) -> bool:
    """What kind of error body the request asked for (mirrors assistant/errors.py)."""
    if path.startswith(("/api", "/healthz")):
        return True
    return "application/json" in headers.get("accept", "") and not headers.get("hx-request")


def problems(request: httpx.Request, r: httpx.Response) -> list[str]:
    """What is wrong with the answer ``r`` to ``request`` (empty: it is fine)."""
    out: list[str] = []
    where = f"{request.method} {request.url.path}?{request.url.query.decode('ascii', 'replace')[:60]}"
    if r.status_code >= 500 and r.status_code not in DESIGNED_5XX:
        out.append(f"{where}: {r.status_code} {r.text[:160]!r}")
    if _TRACE.search(r.text):
        out.append(f"{where}: internals shown to the client: {r.text[:160]!r}")
    if 400 <= r.status_code < 600:
        ctype = r.headers.get("content-type", "")
        if wants_json(request.url.path, dict(request.headers)):
            try:
                body = json.loads(r.text)
                ok = isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"].strip()
            except ValueError:
                ok = False
            if not (ctype.startswith("application/json") and ok):
                out.append(f"{where}: {r.status_code} is not a JSON error: {ctype} {r.text[:120]!r}")
        elif not (ctype.startswith("text/html") and 'class="error"' in r.text):
            out.append(f"{where}: {r.status_code} is not an HTML error: {ctype} {r.text[:120]!r}")
    return out
