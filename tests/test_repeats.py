"""Literal repeats (retrieval.repeats): where else a result's passage plays in its track, and how every
entry point says so (search, the JSON API in both forms, the chat, the CLI, the result card)."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.synth_audio import SR, random_chord_track
from encoder.features import CHROMA, acoustic_features, chroma_phases
from retrieval.passage import CHROMA_PHASES, Alignment, align
from retrieval.repeats import (
    MAX_ALSO,
    REPEAT_GAP_S,
    REPEAT_MIN_LINEUP,
    add_also_at,
    also_at,
    other_peaks,
)
from retrieval.types import Result

#: The repeated stretch of the synthetic track: seconds [REPEAT_FROM, REPEAT_FROM + REPEAT_LEN) play
#: again from REPEAT_TO, note for note.
REPEAT_FROM, REPEAT_LEN, REPEAT_TO = 10.0, 13.0, 41.0


def _with_repeat(y: np.ndarray) -> np.ndarray:
    out = y.copy()
    a, n, b = int(REPEAT_FROM * SR), int(REPEAT_LEN * SR), int(REPEAT_TO * SR)
    out[b : b + n] = y[a : a + n]
    return out


def _query(y: np.ndarray, start_s: float, seconds: float = 10.0, noise: float = 0.01):
    clip = y[int(start_s * SR) : int((start_s + seconds) * SR)]
    clip = clip + noise * np.random.default_rng(1).standard_normal(len(clip)).astype(np.float32)
    chroma = acoustic_features(y=clip)[:, CHROMA]
    return chroma, chroma_phases(y=clip, phases=CHROMA_PHASES, frames=len(chroma))


@pytest.fixture(scope="module")
def plain() -> np.ndarray:
    return random_chord_track(seconds=60, seed=5)


def _also(y: np.ndarray, start_s: float, seconds: float = 10.0) -> tuple[Alignment, list[float]]:
    q, phases = _query(y, start_s, seconds)
    track = acoustic_features(y=y)[:, CHROMA]
    a = align(query_chroma=q, track_chroma=track, approx_starts=[0.0], search_s=np.inf)
    return a, also_at(query_chroma=q, query_phases=phases, track_versions=[track], alignment=a)


@pytest.mark.parametrize("start_s", [12.35, 12.35 + REPEAT_TO - REPEAT_FROM])
def test_a_literal_repeat_is_named_at_its_time(plain, start_s):
    """Cut from either playing, the clip is cited at one of the two and the other is named."""
    a, got = _also(_with_repeat(plain), start_s)
    places = (12.35, 12.35 + REPEAT_TO - REPEAT_FROM)
    assert a.score >= REPEAT_MIN_LINEUP and min(abs(a.start_s - p) for p in places) <= 0.2
    other = max(places, key=lambda p: abs(p - a.start_s))
    assert len(got) == 1, (a, got)
    assert got[0] == pytest.approx(other, abs=0.2)


def test_no_repeat_no_also_at(plain):
    a, got = _also(plain, 12.35)
    assert a.score >= REPEAT_MIN_LINEUP and abs(a.start_s - 12.35) <= 0.2
    assert got == []
    # The repeat's own track, clipped outside the repeated stretch: nothing either.
    a, got = _also(_with_repeat(plain), 26.0)
    assert abs(a.start_s - 26.0) <= 0.2 and got == []


def test_not_the_own_passage_names_nothing(plain):
    y = _with_repeat(plain)
    q, phases = _query(y, 12.35)
    track = acoustic_features(y=y)[:, CHROMA]
    weak = Alignment(12.3, REPEAT_MIN_LINEUP - 0.01, 0)  # a likeness, not the same passage
    assert also_at(query_chroma=q, query_phases=phases, track_versions=[track], alignment=weak) == []


def test_other_peaks_keep_apart_and_skip_shoulders():
    curve = np.full(400, 0.1)
    curve[100] = 1.0  # the cited place
    curve[100 + 25] = 0.99  # closer than the gap: the same place
    curve[200:215] = np.linspace(0.95, 0.97, 15)  # a rising shoulder: only its top (214) is a peak
    curve[300], curve[320], curve[340] = 0.98, 0.97, 0.96  # 320: within the gap of 300
    gap = int(REPEAT_GAP_S * 10)
    got = other_peaks(curve, cited_lag=100, floor=0.9, gap=gap, half_width=10, max_n=MAX_ALSO)
    assert got == [300, 214, 340]
    assert other_peaks(curve, cited_lag=100, floor=0.975, gap=gap, half_width=10, max_n=MAX_ALSO) == [300]
    assert other_peaks(curve, cited_lag=100, floor=0.9, gap=gap, half_width=10, max_n=1) == [300]


def test_add_also_at_fills_only_the_result_cited_at_its_own_passage(plain):
    y = _with_repeat(plain)
    q, phases = _query(y, 12.35)
    track = acoustic_features(y=y)[:, CHROMA]
    a = align(query_chroma=q, track_chroma=track, approx_starts=[0.0], search_s=np.inf)

    def result(rank: int, track_id: int, start: float) -> Result:
        return Result(rank=rank, segment_id=rank, track_id=track_id, title="", composer="", work="", era="",
                      path="", start=start, end=start + 10, score=0.0, match=0.0, likeness=0.0)  # fmt: skip

    rs = [result(1, 7, round(a.start_s, 2)), result(2, 7, 2.0), result(3, 8, round(a.start_s, 2))]
    add_also_at(rs, query_chroma=q, query_phases=phases, aligned={7: a, 8: Alignment(a.start_s, 0.6, 0)},
                chromas={7: track, 8: track}, band_chromas={})  # fmt: skip
    assert len(rs[0].also_at) == 1 and rs[1].also_at == [] and rs[2].also_at == []


# --- through the product: search, the JSON API in both forms, the chat, the CLI, the card ---------

#: The passage (Loop's seconds [5, 17)) plays twice in Loop and twice in Medley; Plain has no repeat.
PASSAGE = (5.0, 12.0)
PLACES = {"Loop": (5.0, 30.0), "Medley": (10.0, 34.0)}
CLIP_AT = 1.35  # the clip starts this far into the passage (off the 10-fps grid)


def _library_tracks() -> list[tuple[str, str, str, np.ndarray]]:
    loop = random_chord_track(seconds=50, seed=21, key=2)
    a, n = int(PASSAGE[0] * SR), int(PASSAGE[1] * SR)
    passage = loop[a : a + n].copy()
    loop[int(PLACES["Loop"][1] * SR) : int(PLACES["Loop"][1] * SR) + n] = passage
    medley = random_chord_track(seconds=50, seed=22, key=9)
    for at in PLACES["Medley"]:
        medley[int(at * SR) : int(at * SR) + n] = passage
    return [
        ("Loop", "Composer A", "Modern", loop),
        ("Medley", "Composer B", "Modern", medley),
        ("Plain", "Composer C", "Modern", random_chord_track(seconds=30, seed=23, key=4)),
    ]


@pytest.fixture(scope="module")
def library(session_db, tmp_path_factory, app_settings):
    """Overrides conftest's: three tracks, two of which play one passage twice."""
    from tests.helpers_app import ingest_library
    from tests.helpers_db import truncate_all

    tracks = _library_tracks()
    lib = ingest_library(session_db, tmp_path_factory.mktemp("repeats"), app_settings, tracks=tracks)
    lib.audio = {t: y for t, _, _, y in tracks}  # type: ignore[attr-defined]
    yield lib
    truncate_all(session_db)


def _clip_wav(
    library, title: str = "Loop", start: float = PASSAGE[0] + CLIP_AT, seconds: float = 10.0
) -> bytes:
    from tests.helpers_app import wav_bytes

    y = library.audio[title]
    return wav_bytes(y[int(start * SR) : int((start + seconds) * SR)])


def _check_also_at(results, library) -> int:
    """Each result on Loop or Medley cited at one playing of the passage names the other; Plain none.
    Returns how many results named a repeat."""
    named = 0
    by_id = {v: k for k, v in library.ids.items()}
    for r in results:
        title = by_id[r["track_id"]]
        if title == "Plain":
            assert r["also_at"] == [], r
            continue
        places = [p + CLIP_AT for p in PLACES[title]]
        if min(abs(r["start"] - p) for p in places) > 0.3:
            continue  # not cited at the passage: not its own passage, nothing to repeat
        other = max(places, key=lambda p: abs(p - r["start"]))
        assert len(r["also_at"]) == 1 and r["also_at"][0] == pytest.approx(other, abs=0.3), r
        named += 1
    return named


def test_search_names_the_repeat_and_not_elsewhere(library):
    from dataclasses import asdict

    from retrieval.search import search
    from retrieval.types import SearchRequest

    y = library.audio["Loop"]
    clip = y[int((PASSAGE[0] + CLIP_AT) * SR) : int((PASSAGE[0] + CLIP_AT + 10) * SR)]
    resp = search(db=library.db, embedder=library.embedder, request=SearchRequest(audio=clip, k=3))
    results = [asdict(r) for r in resp.results]
    assert results[0]["track_id"] in (library.ids["Loop"], library.ids["Medley"])
    assert _check_also_at(results, library) == 2  # both tracks that play the passage
    assert "repeats" in resp.timings_ms
    # A clip of Plain: its own passage, no repeat.
    plain = library.audio["Plain"][int(8.35 * SR) : int(18.35 * SR)]
    resp = search(db=library.db, embedder=library.embedder, request=SearchRequest(audio=plain, k=3))
    assert resp.results[0].track_id == library.ids["Plain"] and resp.results[0].also_at == []


def test_api_search_both_forms_and_the_schema(client, library):
    r = client.post(
        "/api/search", files={"file": ("clip.wav", _clip_wav(library), "audio/wav")}, data={"k": "3"}
    )
    assert r.status_code == 200, r.text
    assert _check_also_at(r.json()["results"], library) == 2
    # JSON: a library moment of Loop (its own track left out) finds the passage in Medley, twice there.
    ref = {"track_id": library.ids["Loop"], "start": PASSAGE[0] + 1.0}
    r = client.post("/api/search", json={"reference": ref, "k": 2})
    assert r.status_code == 200, r.text
    top = r.json()["results"][0]
    assert top["track_id"] == library.ids["Medley"]
    places = [p + 1.0 for p in PLACES["Medley"]]
    assert min(abs(top["start"] - p) for p in places) <= 0.3
    assert top["also_at"] == [pytest.approx(max(places, key=lambda p: abs(p - top["start"])), abs=0.3)]
    schema = client.get("/schema/openapi.json").json()["components"]["schemas"]
    result = next(v for k, v in schema.items() if k.endswith("MomentResult"))
    assert result["properties"]["also_at"]["type"] == "array"
    assert result["properties"]["also_at"]["items"]["type"] == "number"


def test_api_chat_names_the_repeat_and_the_explainer_cites_it(client, library):
    from assistant.explain import check_explanation

    r = client.post(
        "/api/chat", files={"file": ("clip.wav", _clip_wav(library), "audio/wav")}, data={"k": "3"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert _check_also_at(body["response"]["results"], library) == 2
    # The offline explainer says where the passage plays again, and its check keeps every sentence.
    md = body["explanation"]["markdown"]
    assert "also plays at" in md, md
    top = body["response"]["results"][0]
    s = int(round(top["also_at"][0]))
    assert f"also plays at {s // 60}:{s % 60:02d}" in md
    text, notes, flags = check_explanation(md, body["response"])
    assert notes == [] and flags == [] and "also plays at" in text


def test_cli_search_prints_the_repeat(library, app_settings, tmp_path):
    import json
    import os
    import subprocess
    import sys

    clip = tmp_path / "clip.wav"
    clip.write_bytes(_clip_wav(library))
    env = {**os.environ, "CADENZA_HOME": str(app_settings.paths.home), "CADENZA_DATABASE_URL": library.db.url}
    base = [sys.executable, "-m", "cadenza", "-q", "search", str(clip), "--k", "3"]
    out = subprocess.run([*base, "--json"], env=env, capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    results = json.loads(out.stdout)["results"]
    assert _check_also_at(results, library) == 2
    human = subprocess.run(base, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert human.returncode == 0, human.stderr[-2000:]
    for r in results:
        if r["also_at"]:
            assert f"this passage also plays at {r['also_at'][0]:.1f} s" in human.stdout, human.stdout


@pytest.mark.browser
def test_the_card_says_where_the_passage_plays_again_and_plays_it(page, base_url, library, tmp_path):
    from tests.helpers_app import attach_clip, wait_until

    clip = tmp_path / "query.wav"
    clip.write_bytes(_clip_wav(library))
    attach_clip(page, base_url + "/", clip, k="3")
    page.click("#send")
    answer = page.locator("section.answer").nth(0)
    answer.locator(".card").first.wait_for()
    also = answer.locator(".card .also-at")
    assert also.count() == 2  # Loop and Medley; Plain's card says nothing of the kind
    card = also.first.locator("xpath=ancestor::*[contains(@class,'card')][1]")
    button = card.locator(".also-at .also-time")
    at = float(button.get_attribute("data-start"))
    assert card.locator(".also-at").inner_text().startswith("This passage also plays at ▶ ")
    s = int(round(at))
    assert f"{s // 60}:{s % 60:02d}" in button.inner_text()
    button.click()
    # The card's player moves to the repeat (it first loads at the cited moment, so poll the time).
    card_id = card.get_attribute("id")
    wait_until(page, f"Math.abs(document.querySelector('#{card_id} audio').currentTime - {at}) < 0.3")


def test_the_likeness_benchmark_counts_the_true_moment_cited_and_also_at_precision(library):
    """bench.likeness_product's re-finding rows: a clip cut from the passage is cited at one playing (top-1
    counts it only when that is where it was cut) and names the other; both count as the true moment cited,
    and the also-at time is a literal repeat (precision 1). A clip of Plain names nothing."""
    from types import SimpleNamespace

    from bench.likeness_product import _refind_rows
    from bench.memsearch import features
    from encoder.features import MEL

    titles = ["Loop", "Medley", "Plain"]
    mels = [features(y=library.audio[t])[:, MEL] for t in titles]
    db_id = [library.ids[t] for t in titles]

    def query(i: int, start: float) -> SimpleNamespace:
        y = library.audio[titles[i]][int(start * SR) : int((start + 10) * SR)]
        return SimpleNamespace(work_index=i, start_s=start, length_s=10.0, audio=y)

    loop = [query(0, p + CLIP_AT) for p in PLACES["Loop"]]
    rows = _refind_rows(
        library.db, library.embedder, {"loop": loop, "plain": [query(2, 8.35)]}, db_id=db_id, k=3, mels=mels
    )
    by = {r["distortion"]: r for r in rows}
    assert by["loop"]["cited"] == 1.0 and by["loop"]["also_n"] == 2 and by["loop"]["also_precision"] == 1.0
    assert by["loop"]["top1_rep"] == 1.0
    assert (
        by["plain"]["cited"] == 1.0 and by["plain"]["also_n"] == 0 and by["plain"]["also_precision"] is None
    )
