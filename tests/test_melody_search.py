"""The melody route against the real database: a hum in another key and tempo finds its tune.

The library holds tunes over chords (several voices); the queries are voice-like hums of one
tune's passage, transposed and slower or faster. These tests fail when the route is bypassed
(the audio route neither reports a melody key nor finds a hum three semitones away).
"""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.errors import InputError
from cadenza.synth_audio import accompanied_tune, random_tune, sing, write_audio
from encoder.embed import Embedder
from retrieval.ingest import ingest, reindex
from retrieval.search import OWN_PASSAGE_ALIGNMENT, RECORDING_ROUTE_REASON, search
from retrieval.store import list_tracks
from retrieval.types import SearchRequest
from tests.helpers_app import assert_typed_answer_keeps_all
from tests.helpers_db import truncate_all

N_TRACKS = 6
SECONDS = 24.0


@pytest.fixture(scope="module")
def embedder():
    return Embedder.load()


@pytest.fixture(scope="module")
def tunes():
    return [random_tune(seconds=SECONDS, seed=40 + i) for i in range(N_TRACKS)]


@pytest.fixture(scope="module")
def tune_lib(session_db, embedder, tunes, tmp_path_factory):
    truncate_all(session_db)
    lib = tmp_path_factory.mktemp("tunelib")
    for i, notes in enumerate(tunes):
        write_audio(lib / f"tune{i}.flac", accompanied_tune(notes=notes, seed=90 + i))
    ingest(db=session_db, paths=[lib], embedder=embedder, workers=1, progress=False)
    with session_db.connection() as conn:
        ids = {t.path.rsplit("/", 1)[-1]: t.id for t in list_tracks(conn)}
    yield ids
    truncate_all(session_db)


def _passage(notes, start, stop):
    return [(s - start, e - start, p) for s, e, p in notes if s >= start and e <= stop]


@pytest.mark.parametrize(("which", "transpose", "tempo"), [(3, -3.0, 1.0), (1, 5.2, 0.87), (4, -6.0, 1.15)])
def test_a_hum_in_another_key_and_tempo_finds_its_tune(
    session_db, embedder, tunes, tune_lib, which, transpose, tempo
):
    hum = sing(notes=_passage(tunes[which], 6.0, 16.0), transpose=transpose, tempo=tempo)
    resp = search(db=session_db, embedder=embedder, request=SearchRequest(audio=hum, k=3))
    assert resp.query["route"] == "melody"  # detected as one voice, not sent through the encoder
    assert resp.query["melody"]["single_voice"]
    top = resp.results[0]
    assert top.track_id == tune_lib[f"tune{which}.flac"]
    want = int(round(-transpose)) % 12
    assert top.key_shift % 12 == want  # library = hummed + shift
    assert resp.query["melody_key_shift"] == top.key_shift
    assert abs(top.components["melody_tempo"] - tempo) < 0.08
    assert 4.0 <= top.start <= 8.5  # the passage hummed starts at 6 s
    assert not resp.nothing_similar
    assert "semitone" in top.reason or "recording's key" in top.reason
    assert_typed_answer_keeps_all(resp)


def test_the_audio_route_does_not_find_the_transposed_hum(session_db, embedder, tunes, tune_lib):
    """The control: forced through the encoder the same hum gets no melody key (and the route says so)."""
    hum = sing(notes=_passage(tunes[3], 6.0, 16.0), transpose=-3.0)
    resp = search(db=session_db, embedder=embedder, request=SearchRequest(audio=hum, k=3, route="audio"))
    assert resp.query["route"] == "audio"
    assert "melody_key_shift" not in resp.query


def test_a_clip_of_several_voices_keeps_the_audio_route(session_db, embedder, tunes, tune_lib):
    clip = accompanied_tune(notes=tunes[2], seed=92)[: int(10 * 16000)]
    resp = search(db=session_db, embedder=embedder, request=SearchRequest(audio=clip, k=3))
    assert resp.query["route"] == "audio"
    assert resp.results[0].track_id == tune_lib["tune2.flac"]


def test_forced_melody_route_refuses_a_clip_without_a_tune(session_db, embedder, tune_lib):
    one_note = np.zeros(16000 * 5, np.float32)  # one sung second, then silence: no tune to match
    one_note[:16000] = sing(notes=[(0.0, 1.0, 69)])[:16000]
    with pytest.raises(InputError, match="too little tune"):
        search(db=session_db, embedder=embedder, request=SearchRequest(audio=one_note, route="melody"))
    with pytest.raises(InputError, match="route must be"):
        search(db=session_db, embedder=embedder, request=SearchRequest(audio=one_note, route="hum"))


def test_reindex_fills_melodies_of_a_library_ingested_before_007(session_db, embedder, tunes, tune_lib):
    with session_db.connection() as conn:
        conn.execute("UPDATE segments SET melody = NULL WHERE track_id = %s", (tune_lib["tune0.flac"],))
        conn.commit()
    hum = sing(notes=_passage(tunes[0], 4.0, 14.0), transpose=2.0)
    resp = search(db=session_db, embedder=embedder, request=SearchRequest(audio=hum, k=3))
    assert resp.query["melody_missing_windows"] > 0
    assert all(r.track_id != tune_lib["tune0.flac"] for r in resp.results)
    report = reindex(db=session_db, embedder=embedder, workers=1, progress=False)
    assert report.replaced == [tune_lib["tune0.flac"]]
    resp = search(db=session_db, embedder=embedder, request=SearchRequest(audio=hum, k=3))
    assert "melody_missing_windows" not in resp.query
    assert resp.results[0].track_id == tune_lib["tune0.flac"]


def test_a_recording_of_one_voice_in_the_library_is_answered_by_the_audio_route(
    session_db, embedder, tunes, tune_lib, tmp_path
):
    """A clip cut from a library recording that is one voice (a solo line) sounds like a hum, but the audio
    route finds its own passage (chroma line-up >= OWN_PASSAGE_ALIGNMENT): that passage is the answer. The
    transposed hums above still find no passage of their own and keep the melody route."""
    solo_notes = random_tune(seconds=SECONDS, seed=77)
    write_audio(tmp_path / "solo.flac", sing(notes=solo_notes))
    ingest(db=session_db, paths=[tmp_path], embedder=embedder, workers=1, progress=False)
    with session_db.connection() as conn:
        solo = next(t.id for t in list_tracks(conn) if t.path.endswith("solo.flac"))
    y = sing(notes=solo_notes)
    truth = 7.3  # off the 2-s segment grid
    clip = y[int(truth * 16000) : int((truth + 10) * 16000)]
    resp = search(db=session_db, embedder=embedder, request=SearchRequest(audio=clip, k=3))
    assert resp.query["melody"]["single_voice"]  # it did sound like one voice
    assert resp.query["route"] == "audio"
    assert resp.query["route_reason"] == RECORDING_ROUTE_REASON
    top = resp.results[0]
    assert top.track_id == solo
    assert abs(top.start - truth) <= 0.5
    assert top.components["passage"] >= OWN_PASSAGE_ALIGNMENT
    forced = search(db=session_db, embedder=embedder, request=SearchRequest(audio=clip, k=3, route="melody"))
    assert forced.query["route"] == "melody"  # asked for, the melody route is still taken
    assert_typed_answer_keeps_all(resp)
