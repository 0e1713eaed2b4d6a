"""Library moments are re-embedded from the track's file; the stored segment is only the fallback."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.audio import load_audio
from cadenza.synth_audio import SR, random_chord_track, write_audio
from encoder.embed import Embedder
from retrieval import clip_query
from retrieval import query as query_mod
from retrieval.ingest import ingest
from retrieval.search import search
from retrieval.store import list_tracks
from retrieval.types import MomentRef, SearchRequest


@pytest.fixture(scope="module")
def embedder():
    return Embedder.untrained(seed=0)


@pytest.fixture
def ingested(db, embedder, tmp_path):
    lib = tmp_path / "lib"
    for i, name in enumerate(("one", "two", "three")):
        write_audio(lib / f"{name}.flac", random_chord_track(seconds=24, seed=40 + i, key=(3 * i) % 12))
    ingest(db=db, paths=[lib], embedder=embedder, workers=1, progress=False)
    with db.connection() as conn:
        ids = {t.title: t.id for t in list_tracks(conn)}
    return lib, ids


def build(db, embedder, *moments: MomentRef, minus: tuple[MomentRef, ...] = ()) -> query_mod.BuiltQuery:
    with db.connection() as conn:
        return query_mod.build(
            conn, request=SearchRequest(moments=moments, minus=minus, k=2), embedder=embedder
        )


def stored_segment(db, track_id: int, start_s: float) -> np.ndarray:
    with db.connection() as conn:
        row = conn.execute(
            "SELECT embedding FROM segments WHERE track_id = %s ORDER BY abs(start_s - %s) LIMIT 1",
            (track_id, start_s),
        ).fetchone()
    v = row[0].to_numpy()
    return v / np.linalg.norm(v)


def test_moment_is_the_exact_clip_re_embedded(db, embedder, ingested):
    lib, ids = ingested
    start = 7.3  # off the 2-s segment grid: the stored segment starts at 8.0 or 6.0
    built = build(db, embedder, MomentRef(ids["two"], start))
    assert built.info["source"] == "moment" and built.info["moment_source"] == "audio"
    assert "fallback_reason" not in built.info
    # The same 10 s through the uploaded-clip path.
    y = load_audio(path=lib / "two.flac")
    clip = clip_query.from_audio(
        audio=y[int(round(start * SR)) : int(round((start + 10) * SR))], embedder=embedder, start_s=0.0
    )
    assert np.allclose(built.profile.embedding, clip.profile.embedding, atol=1e-5)
    assert not np.allclose(built.profile.embedding, stored_segment(db, ids["two"], start), atol=1e-3)
    assert built.info["start"] == start and abs(built.info["end"] - (start + 10)) < 0.15
    assert built.info["key_index"] == clip.info["key_index"] and built.info["mode"] == clip.info["mode"]
    assert len(built.chroma10) == 100
    assert {"decode", "features", "embed"} <= set(built.timings_ms)


def test_missing_or_changed_file_falls_back_to_the_stored_segment(db, embedder, ingested):
    lib, ids = ingested
    (lib / "one.flac").unlink()
    gone = build(db, embedder, MomentRef(ids["one"], 7.3))
    assert gone.info["moment_source"] == "stored-segment" and "gone" in gone.info["fallback_reason"]
    assert np.allclose(gone.profile.embedding, stored_segment(db, ids["one"], 7.3), atol=1e-6)
    # Same path, other content: the stored moment is the truth about what was ingested.
    write_audio(lib / "three.flac", random_chord_track(seconds=24, seed=99, key=5))
    changed = build(db, embedder, MomentRef(ids["three"], 4.0))
    assert changed.info["moment_source"] == "stored-segment" and "changed" in changed.info["fallback_reason"]
    assert np.allclose(changed.profile.embedding, stored_segment(db, ids["three"], 4.0), atol=1e-6)


def test_blend_reports_each_moment_source_and_search_runs(db, embedder, ingested):
    lib, ids = ingested
    (lib / "one.flac").unlink()
    blend = build(db, embedder, MomentRef(ids["two"], 3.0), MomentRef(ids["one"], 5.0))
    assert blend.info["source"] == "blend"
    assert blend.info["moment_sources"] == ["audio", "stored-segment"]
    resp = search(db=db, embedder=embedder, request=SearchRequest(moments=(MomentRef(ids["two"], 3.0),), k=2))
    assert resp.query["moment_source"] == "audio" and resp.results
    assert ids["two"] not in {r.track_id for r in resp.results}
    assert "decode" in resp.timings_ms
