"""Every route and form field under hostile input: no 5xx but the designed 503/507, every error in the
kind of body the request asked for (JSON or HTML), nothing of the server's internals shown, and a
normal search still answers afterwards.

The routes are read from the running app, so a route added later is fuzzed too (its path parameters
and the common fields; give it its own fields in ``FIELDS``). Three passes:

1. a hand-written corpus (tests/helpers_hostile.py) through every route, field and Content-Type;
2. a Hypothesis state machine: conversations started, followed up, refined, put back, replayed, with
   generated text, ids and numbers, the answers checked at every step;
3. the server log: any unexpected exception is logged with its traceback (and there was none).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cadenza.settings import LimitSettings, Settings
from tests.helpers_app import clip_of_track, running_app
from tests.helpers_hostile import (
    HOSTILE_BYTES,
    HOSTILE_JSON,
    HOSTILE_JSON_TEXTS,
    HOSTILE_TEXT,
    ODD_CONTENT_TYPES,
    problems,
)

#: Form and query fields the routes read. Values are tried in every one of them.
FIELDS = (
    "text", "message", "start", "duration", "k", "conversation_id", "ref_track", "ref_start",
    "base_message", "track_id", "exclude_composer", "q", "composer", "era", "_csrf_token",
)  # fmt: skip

#: Path parameter values, by the parameter's name.
PATH_VALUES: dict[str, tuple[str, ...]] = {
    "conversation_id": (
        "not-a-uuid",
        "00000000-0000-0000-0000-000000000000",
        "%00",
        "a" * 300,
        "..%2F..%2Fetc",
    ),
    "track_id": ("0", "-1", "1", "9" * 30),
    "message_id": ("0", "-5", "1", "9" * 30),
}


@pytest.fixture(scope="module")
def app_settings(settings) -> Settings:
    return dataclasses.replace(
        settings, limits=LimitSettings(requests_per_minute=0, max_upload_bytes=2_000_000)
    )


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def server_errors() -> Iterator[_Errors]:
    handler = _Errors()
    logger = logging.getLogger("assistant")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def app(library, app_settings, server_errors) -> Iterator[tuple[str, Any]]:
    from assistant.app import create_app

    with running_app(app_settings, db=library.db, embedder=library.embedder) as url:
        yield url, create_app(app_settings, db=library.db, embedder=library.embedder)


def _client(url: str) -> httpx.Client:
    c = httpx.Client(base_url=url, timeout=120)
    m = re.search(r'"X-CSRFToken":\s*"([^"]+)"', c.get("/").text)
    assert m, "the chat page hands out a CSRF token"
    c.headers["X-CSRFToken"] = m.group(1)
    return c


def _routes(app: Any) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves, static files and schema included."""
    out = []
    for route in app.routes:
        for method in sorted(getattr(route, "methods", ()) or ()):
            if method in ("HEAD", "OPTIONS"):
                continue
            out.append((method, route.path))
    return sorted(set(out))


def _paths(template: str, ids: dict[str, str]) -> Iterator[str]:
    """Concrete paths for a template: one with known-good ids, then hostile values per parameter."""
    params = re.findall(r"\{(\w+)(?::\w+)?\}", template)
    fill = lambda values: re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m.group(1)], template)  # noqa: E731
    good = {p: ids.get(p, "1") for p in params}
    yield fill(good)
    for p in params:
        for v in PATH_VALUES.get(p, ("%00", "a" * 300, "-1")):
            yield fill({**good, p: v})
    if "{file_path" in template:  # the static files router
        for v in ("app.js%00", "..%2F..%2Fpyproject.toml", "%00", "a" * 300):
            yield template.split("{")[0] + v


def _multipart(fields: dict[str, bytes], boundary: str = "fuzzboundary") -> tuple[bytes, str]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value + b"\r\n"
        for name, value in fields.items()
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _check(found: list[str], client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    r = client.request(method, path, **kwargs)
    found += problems(r.request, r)
    return r


def _search_works(client: httpx.Client) -> None:
    r = client.post("/api/search", files={"file": ("ok.wav", clip_of_track(0), "audio/wav")}, data={"k": "2"})
    assert r.status_code == 200 and r.json()["results"], r.text[:300]


def _known_ids(client: httpx.Client, library) -> dict[str, str]:
    r = client.post("/api/chat", files={"file": ("clip.wav", clip_of_track(1), "audio/wav")}, data={"k": "3"})
    assert r.status_code == 200, r.text[:300]
    body = r.json()
    return {
        "conversation_id": body["conversation_id"],
        "message_id": str(body["message_id"]),
        "track_id": str(library.ids["Study 0"]),
        "file_path": "app.js",
    }


def test_hand_written_corpus_through_every_route_and_field(app, library, server_errors):
    url, asgi = app
    client = _client(url)
    anonymous = httpx.Client(base_url=url, timeout=60)  # no CSRF token: a forged form
    found: list[str] = []
    ids = _known_ids(client, library)
    routes = _routes(asgi)
    assert {p for _, p in routes} >= {"/api/search", "/api/chat", "/chat/messages", "/library", "/healthz"}
    for method, template in routes:
        for path in _paths(template, ids):
            if method == "GET":
                _check(found, client, "GET", path)
                for field, value in zip(FIELDS, itertools.cycle(HOSTILE_TEXT), strict=False):
                    _check(found, client, "GET", path, params={field: value})
                _check(found, client, "GET", path, headers={"accept": "application/json"})
                _check(found, client, "GET", path, headers={"HX-Request": "true", "range": "bytes=99999999-"})
                continue
            headers = {"HX-Request": "true"} if not path.startswith("/api") else {}
            # Every field with every kind of hostile text, as a form and as JSON.
            for value in HOSTILE_TEXT:
                _check(found, client, method, path, data=dict.fromkeys(FIELDS, value), headers=headers)
            for value in HOSTILE_BYTES:
                body, ctype = _multipart(dict.fromkeys(FIELDS, value))
                _check(found, client, method, path, content=body, headers={**headers, "content-type": ctype})
            for value in HOSTILE_JSON:
                body = {f: value for f in FIELDS} | {"reference": value, "filters": value}
                _check(found, client, method, path, json=body, headers=headers)
                _check(found, client, method, path, json={"reference": {"track_id": value, "start": value}})
                _check(
                    found,
                    client,
                    method,
                    path,
                    json={"message_id": value, "track_id": value, "conversation_id": ids["conversation_id"]},
                )
            for text in HOSTILE_JSON_TEXTS:
                _check(
                    found,
                    client,
                    method,
                    path,
                    content=text,
                    headers={**headers, "content-type": "application/json"},
                )
            for ctype in ODD_CONTENT_TYPES:
                _check(
                    found,
                    client,
                    method,
                    path,
                    content=b"k=1&text=\xff\x00",
                    headers={**headers, "content-type": ctype},
                )
            _check(found, anonymous, method, path, data={"text": "x"}, headers=headers)
    # Clips with hostile names and bodies, and hostile numbers beside a real clip (these decode).
    clip = clip_of_track(2)
    for name in ("\x00.wav", "a" * 5000 + ".wav", "../../x.wav", "\u202eevil.wav", ""):
        for path in ("/api/search", "/api/chat", "/chat/messages"):
            _check(
                found,
                client,
                "POST",
                path,
                files={"file": (name, clip[:1000], "audio/wav")},
                headers={"HX-Request": "true"},
            )
    for field, value in (
        ("k", "true"),
        ("k", "1.5"),
        ("duration", "0"),
        ("start", "-1"),
        ("start", "1e400"),
        ("k", "\x00"),
    ):
        _check(
            found,
            client,
            "POST",
            "/api/search",
            files={"file": ("c.wav", clip, "audio/wav")},
            data={field: value},
        )
    assert found == [], "\n".join(found[:40])
    _search_works(client)
    client.close()
    anonymous.close()


class Conversations(RuleBasedStateMachine):
    """Conversations driven by generated input; every answer is checked as it comes."""

    url: str = ""
    library: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.client = _client(self.url)
        self.found: list[str] = []
        self.conversations: list[str] = []
        self.messages: list[int] = []

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return _check(self.found, self.client, method, path, **kwargs)

    @initialize()
    def start(self) -> None:
        r = self._send(
            "POST", "/api/chat", files={"file": ("q.wav", clip_of_track(4), "audio/wav")}, data={"k": "3"}
        )
        assert r.status_code == 200, r.text[:300]
        self.conversations.append(r.json()["conversation_id"])
        self.messages.append(int(r.json()["message_id"]))

    @rule(
        text=st.text(max_size=80),
        k=st.one_of(st.none(), st.integers(-3, 60), st.booleans(), st.floats(allow_nan=True)),
    )
    def follow_up(self, text: str, k: Any) -> None:
        cid = self.conversations[-1]
        try:
            r = self._send("POST", "/api/chat", json={"message": text, "conversation_id": cid, "k": k})
        except ValueError:  # NaN: httpx refuses to encode it; send the text as a client could
            r = self._send(
                "POST",
                "/api/chat",
                content=f'{{"message": {json.dumps(text)}, "k": NaN}}'.encode(),
                headers={"content-type": "application/json"},
            )
        if r.status_code == 200:
            self.messages.append(int(r.json()["message_id"]))

    @rule(text=st.text(max_size=60), raw=st.binary(max_size=16))
    def htmx_message(self, text: str, raw: bytes) -> None:
        cid = self.conversations[-1]
        self._send(
            "POST",
            "/chat/messages",
            data={"text": text, "conversation_id": cid, "base_message": str(self.messages[-1])},
            headers={"HX-Request": "true"},
        )
        body, ctype = _multipart({"text": raw, "conversation_id": cid.encode()})
        self._send(
            "POST", "/chat/messages", content=body, headers={"HX-Request": "true", "content-type": ctype}
        )

    @rule(track=st.integers(-2, 2**64), message=st.one_of(st.integers(-2, 2**64), st.text(max_size=5)))
    def put_back(self, track: int, message: Any) -> None:
        cid = self.conversations[-1]
        self._send(
            "POST",
            "/api/chat/put-back",
            json={"conversation_id": cid, "message_id": message, "track_id": track},
        )
        self._send(
            "POST",
            f"/c/{cid}/m/{self.messages[-1]}/put-back",
            data={"track_id": str(track)},
            headers={"HX-Request": "true"},
        )

    @rule(
        track=st.integers(-2, 2**63),
        start=st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 10**6)),
        k=st.integers(-1, 60),
    )
    def search_moment(self, track: int, start: float, k: int) -> None:
        self._send("POST", "/api/search", json={"reference": {"track_id": track, "start": start}, "k": k})

    @precondition(lambda self: len(self.messages) > 0)
    @rule()
    def replay(self) -> None:
        cid = self.conversations[-1]
        self._send("GET", f"/c/{cid}")
        self._send("GET", f"/c/{cid}/m/{self.messages[-1]}/explain")

    @rule(q=st.text(max_size=40), composer=st.text(max_size=20))
    def browse(self, q: str, composer: str) -> None:
        self._send("GET", "/library", params={"q": q, "composer": composer})

    @invariant()
    def nothing_wrong(self) -> None:
        assert self.found == [], "\n".join(self.found[:20])

    def teardown(self) -> None:
        self.client.close()


def test_stateful_conversations_under_generated_input(app, library, server_errors):
    url, _ = app
    Conversations.url, Conversations.library = url, library
    machine = Conversations.TestCase
    machine.settings = hypothesis_settings(
        max_examples=6, stateful_step_count=12, deadline=None, database=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    machine().runTest()
    client = _client(url)
    try:
        _search_works(client)
    finally:
        client.close()


def test_no_unexpected_exception_was_logged_by_the_fuzzing(app, server_errors):
    # Runs after the two passes above (same module): a 500 would be here with its traceback.
    unexpected = [r for r in server_errors.records if r.name == "assistant.errors"]
    assert unexpected == [], [r.getMessage() for r in unexpected]
    assert all(r.exc_info is None or r.exc_info[2] is not None for r in server_errors.records)
