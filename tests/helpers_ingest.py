"""Shared checks for ingestion tests: what a complete library looks like, and what it stores."""

from __future__ import annotations

from typing import Any

import numpy as np


def expected_segments(seconds: float) -> int:
    n = 1 + int(seconds * 16_000) // 1600  # frames
    starts = list(range(0, n - 100 + 1, 20)) if n >= 100 else []
    nxt = starts[-1] + 20 if starts else 0
    if nxt + 100 > n and n - nxt >= 50:
        starts.append(nxt)
    return len(starts)


def counts(db) -> tuple[int, int, int]:
    with db.connection() as conn:
        return tuple(
            conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in ("tracks", "segments", "track_chroma")
        )  # type: ignore[return-value]


def check_complete(db) -> None:
    """Every track has all its segments, its chroma (full and phone band) and their timbre and harmony
    vectors (sql/009: the test audio has no silent window), and its track sound is their mean
    (sql/012); no content hash twice."""
    with db.connection() as conn:
        no_timbre = conn.execute(
            "SELECT count(*) FROM segments s JOIN tracks t ON t.id = s.track_id"
            " WHERE s.timbre IS NULL OR t.timbre_version IS NULL OR s.harmony IS NULL"
        ).fetchone()[0]
        assert conn.execute("SELECT count(*) FROM track_chroma WHERE band_chroma IS NULL").fetchone()[0] == 0
        for track, mean in conn.execute(
            "SELECT t.timbre, (SELECT avg(s.timbre) FROM segments s WHERE s.track_id = t.id) FROM tracks t"
        ).fetchall():
            assert track is not None and np.abs(track.to_numpy() - mean.to_numpy()).max() < 1e-5
        rows = conn.execute(
            "SELECT t.duration_s, (SELECT count(*) FROM segments s WHERE s.track_id = t.id),"
            " (SELECT count(*) FROM track_chroma c WHERE c.track_id = t.id) FROM tracks t"
        ).fetchall()
        dup = conn.execute("SELECT count(*) - count(DISTINCT content_hash) FROM tracks").fetchone()[0]
    assert dup == 0 and no_timbre == 0
    for dur, n_segs, n_chroma in rows:
        assert n_segs == expected_segments(float(np.round(dur, 3))) and n_chroma == 1


def stored_rows(db) -> dict[tuple[str, float], tuple[Any, ...]]:
    """Every stored segment by (file name, start): embedding, descriptors, chroma (full and phone band), harmony
    vector, and its track's metadata."""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT t.path, s.start_s, s.embedding, s.key_index, s.mode, s.tempo_bpm, s.loudness_db, s.chroma_seq,"
            " s.model_version, t.title, t.composer, t.work, t.era, t.year, t.duration_s, c.chroma, c.band_chroma,"
            " s.harmony FROM segments s JOIN tracks t ON t.id = s.track_id JOIN track_chroma c ON c.track_id = t.id"
        ).fetchall()
    return {
        (r[0].rsplit("/", 1)[-1], round(float(r[1]), 2)): (
            r[2].to_numpy(),
            *r[3:7],
            bytes(r[7]),
            *r[8:15],
            bytes(r[15]),
            None if r[16] is None else bytes(r[16]),
            None if r[17] is None else r[17].to_numpy().tobytes(),
        )
        for r in rows
    }


def assert_same_rows(got: dict, want: dict) -> None:
    """Same segments, embeddings to float rounding, everything else equal."""
    assert set(got) == set(want)
    for key, (e, *rest) in want.items():
        g, *grest = got[key]
        assert np.abs(g - e).max() < 1e-5, key
        assert grest == rest, key
