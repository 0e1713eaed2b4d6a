"""Shared helpers for tests that serve the app over real HTTP: a small ingested library of
synthesized tracks (two per composer), uvicorn on a free port, a browser-like client, and the
chromium flags and polling helper the Playwright tests use."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

from assistant.api_answers import SearchAnswer, answer
from assistant.app import create_app, load_embedder
from assistant.llm import LLM
from assistant.services import plain_json, without_paths
from cadenza.db import Database
from cadenza.fake_llm import FakeLLM
from cadenza.settings import LLMSettings, Settings
from cadenza.synth_audio import SR, clicks, random_chord_track, write_audio
from retrieval.types import SearchResponse
from tests.helpers_db import truncate_all

#: (composer, era, key, bpm) of the six library tracks; two tracks per composer.
TRACKS = [
    ("Johann Sebastian Bach", "Baroque", 0, 60),
    ("Johann Sebastian Bach", "Baroque", 7, 75),
    ("Wolfgang Amadeus Mozart", "Classical", 2, 90),
    ("Wolfgang Amadeus Mozart", "Classical", 9, 105),
    ("Johannes Brahms", "Romantic", 5, 120),
    ("Johannes Brahms", "Romantic", 4, 135),
]
TRACK_SECONDS = 30.0


def track_audio(i: int) -> np.ndarray:
    _, _, key, bpm = TRACKS[i]
    return random_chord_track(seconds=TRACK_SECONDS, seed=i, key=key) + 0.3 * clicks(
        bpm=bpm, seconds=TRACK_SECONDS
    )


def wav_bytes(y: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, y, SR, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@dataclasses.dataclass
class Library:
    db: Database
    embedder: Any
    folder: Path
    ids: dict[str, int]  # title -> track id


def ingest_library(
    db: Database,
    folder: Path,
    settings: Settings,
    tracks: list[tuple[str, str, str, np.ndarray]] | None = None,
) -> Library:
    """Write the six synthetic tracks (or ``tracks``: title, composer, era, audio) with a metadata
    sidecar and ingest them for real."""
    from retrieval.ingest import ingest

    truncate_all(db)
    folder.mkdir(parents=True, exist_ok=True)
    if tracks is None:
        tracks = [(f"Study {i}", c, era, track_audio(i)) for i, (c, era, _, _) in enumerate(TRACKS)]
    rows = []
    for i, (title, composer, era, y) in enumerate(tracks):
        path = write_audio(folder / f"track{i}.wav", y)
        rows.append({"path": path.name, "title": title, "composer": composer, "era": era})
    (folder / "metadata.json").write_text(json.dumps(rows))
    embedder = load_embedder(settings)
    report = ingest(
        db=db,
        paths=[folder],
        embedder=embedder,
        workers=1,
        metadata_file=folder / "metadata.json",
        progress=False,
    )
    assert len(report.added) == len(tracks), report
    with db.connection() as conn:
        ids = {t: i for i, t in conn.execute("SELECT id, title FROM tracks").fetchall()}
    return Library(db=db, embedder=embedder, folder=folder, ids=ids)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_app(settings: Settings, *, db: Any, embedder: Any, llm: Any = None) -> Iterator[str]:
    """Serve the app with uvicorn in a thread; yields its base URL."""
    import uvicorn

    app = create_app(settings, db=db, embedder=embedder, llm=llm)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="cadenza-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def browser_like_client(base_url: str, *, timeout: float = 120) -> Iterator[httpx.Client]:
    """An HTTP client that first loads the chat page, as a browser does: it gets the cookies and,
    when the app protects forms against CSRF, the token the page hands to htmx (sent as a header)."""
    with httpx.Client(base_url=base_url, timeout=timeout) as c:
        page = c.get("/")
        assert page.status_code == 200, page.text[:300]
        m = re.search(r'"X-CSRFToken":\s*"([^"]+)"', page.text)
        if m:
            c.headers["X-CSRFToken"] = m.group(1)
        yield c


@contextmanager
def app_with_llm(
    settings: Settings, library: Library, *, timeout_s: float, max_retries: int
) -> Iterator[tuple[FakeLLM, httpx.Client]]:
    """The app on ``library`` with a model endpoint of our own (cadenza/fake_llm.py) behind its LLM client;
    yields (the endpoint, to script it; a browser-like client of the app)."""
    with FakeLLM() as fake:
        llm = LLM(
            LLMSettings(
                base_url=fake.base_url,
                api_key="k",
                model="fake",
                timeout_s=timeout_s,
                max_retries=max_retries,
            )
        )
        with (
            running_app(settings, db=library.db, embedder=library.embedder, llm=llm) as url,
            browser_like_client(url) as client,
        ):
            yield fake, client


def chat(client: httpx.Client, **data: Any) -> dict[str, Any]:
    """``POST /api/chat`` with ``data`` as its JSON body; the answer, which must be a 200."""
    r = client.post("/api/chat", json=data)
    assert r.status_code == 200, r.text
    return r.json()


def page_message(client: httpx.Client, data: dict[str, str]) -> httpx.Response:
    """``POST /chat/messages`` as the page's form sends it through htmx (the HX-Request header)."""
    return client.post("/chat/messages", data=data, headers={"HX-Request": "true"})


def clip_of_track(i: int, start: float = 8.0, seconds: float = 12.0) -> bytes:
    y = track_audio(i)[int(start * SR) : int((start + seconds) * SR)]
    return wav_bytes(y)


#: Debian's chromium under Playwright (never `playwright install`: it downloads a browser): headless, no sandbox, no network side traffic.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    # A fake microphone (a beeping tone) so the recording flow runs without hardware.
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


def attach_clip(page: Any, url: str, clip: Path, *, k: str) -> None:
    """Open the chat page at ``url``, choose ``k`` results and attach ``clip``, as a listener does."""
    page.goto(url)
    page.select_option("#k", k)
    page.set_input_files("#clip-file", str(clip))


def wait_until(page, expression: str, timeout_s: float = 20.0) -> None:
    """Poll a JS expression through the DevTools protocol: unlike ``wait_for_function`` it needs no
    eval inside the page, which the app's Content-Security-Policy forbids."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        page.wait_for_timeout(50)


def assert_typed_answer_keeps_all(resp: SearchResponse) -> None:
    """``POST /api/search``'s typed answer of ``resp`` says exactly what the search wrote: no key
    lost (the contract would drop one it lacks), no null added."""
    data = without_paths(plain_json(resp.to_json()))
    assert msgspec.to_builtins(answer(data, SearchAnswer)) == data
