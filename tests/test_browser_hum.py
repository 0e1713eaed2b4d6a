"""Hum mode in a real browser: a hum three semitones away from the library, played into chromium's
fake microphone from a WAV file, is recorded on the page and finds its passage by melody."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from cadenza.settings import LimitSettings
from cadenza.synth_audio import accompanied_tune, random_tune, sing, write_audio
from tests.helpers_app import CHROMIUM_ARGS, running_app, wait_until

pytestmark = pytest.mark.browser

N_TRACKS = 5
WHICH = 2


@pytest.fixture(scope="module")
def tunes():
    return [random_tune(seconds=24.0, seed=70 + i) for i in range(N_TRACKS)]


@pytest.fixture(scope="module")
def tune_app(session_db, settings, tunes, tmp_path_factory) -> Iterator[tuple[str, dict[str, int]]]:
    from assistant.app import load_embedder
    from retrieval.ingest import ingest
    from tests.helpers_db import truncate_all

    truncate_all(session_db)
    app_settings = dataclasses.replace(settings, limits=LimitSettings())
    lib = tmp_path_factory.mktemp("hum-library")
    for i, notes in enumerate(tunes):
        write_audio(lib / f"tune{i}.flac", accompanied_tune(notes=notes, seed=60 + i))
    embedder = load_embedder(app_settings)
    ingest(db=session_db, paths=[lib], embedder=embedder, workers=1, progress=False)
    with session_db.connection() as conn:
        ids = {
            p.rsplit("/", 1)[-1]: int(i) for i, p in conn.execute("SELECT id, path FROM tracks").fetchall()
        }
    try:
        with running_app(app_settings, db=session_db, embedder=embedder) as url:
            yield url, ids
    finally:
        truncate_all(session_db)


@pytest.fixture(scope="module")
def hum_wav(tunes, tmp_path_factory):
    """Tune 2 from 6 s to 16 s, hummed 3 semitones lower (and a little flat) than the recording."""
    import soundfile as sf

    from cadenza.audio import resample

    notes = [(s - 6.0, e - 6.0, p) for s, e, p in tunes[WHICH] if s >= 6.0 and e <= 16.0]
    y = resample(y=sing(notes=notes, transpose=-3.2), orig_sr=16_000, sr=48_000)
    path = tmp_path_factory.mktemp("hum") / "hum.wav"
    sf.write(str(path), y, 48_000, subtype="PCM_16")
    return path


def test_a_hum_in_another_key_finds_its_passage_in_the_browser(tune_app, hum_wav):
    from playwright.sync_api import sync_playwright

    url, ids = tune_app
    args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={hum_wav}"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        try:
            page = browser.new_context(permissions=["microphone"], base_url=url).new_page()
            page.goto(url + "/")
            page.check("#hum-mode")
            page.click("#record")
            wait_until(page, "document.getElementById('record').textContent.includes('Stop')")
            assert "hum or whistle" in page.locator("#clip-name").inner_text()
            page.wait_for_timeout(9000)
            page.click("#record")
            wait_until(page, "document.getElementById('clip-file').files.length === 1")
            page.click("#send")
            answer = page.locator("section.answer").first
            answer.wait_for(timeout=120_000)
            note = answer.locator(".melody-route").inner_text()
            assert note.startswith("Searched by melody")
            assert "3 semitones lower than the recording" in note
            first = answer.locator(".card").first
            assert int(first.get_attribute("data-track") or 0) == ids[f"tune{WHICH}.flac"]
            assert page.locator(".error").count() == 0
        finally:
            browser.close()
