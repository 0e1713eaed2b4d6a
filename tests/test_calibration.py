"""retrieval.calibration against the real database: a stored calibration is reused while unchanged."""

from __future__ import annotations

import numpy as np

from cadenza.db import autocommit
from retrieval.calibration import calibrate, load_calibration

MODEL = "test-calibration"


def _library(conn, *, n_tracks: int = 4, per_track: int = 30, seed: int = 0) -> None:
    """Random unit embeddings, ``per_track`` segments on each of ``n_tracks`` tracks."""
    rng = np.random.default_rng(seed)
    for t in range(n_tracks):
        tid = conn.execute(
            "INSERT INTO tracks (content_hash, path, duration_s) VALUES (%s, %s, 100) RETURNING id",
            (f"hash-{seed}-{t}", f"/nowhere/{t}.wav"),
        ).fetchone()[0]
        for i in range(per_track):
            v = rng.normal(size=128).astype(np.float32)
            conn.execute(
                "INSERT INTO segments (track_id, start_s, end_s, embedding, model_version, chroma_mean)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (tid, 2.0 * i, 2.0 * i + 10, v / np.linalg.norm(v), MODEL, [1 / 12] * 12),
            )
    conn.execute("ANALYZE segments")


def test_a_kept_calibration_is_reused_until_its_row_changes(db):
    memo: dict = {}
    with autocommit(db) as conn:
        _library(conn)
        first = load_calibration(conn, model_version=MODEL, memo=memo)  # measured and stored
        assert first is not None
        read = load_calibration(conn, model_version=MODEL, memo=memo)  # read from the table, kept
        again = load_calibration(conn, model_version=MODEL, memo=memo)
        assert again is read, "an unchanged stored row is not fetched and decoded again"
        np.testing.assert_allclose(read.sample, first.sample, atol=1e-3)  # float16 on disk
        np.testing.assert_allclose(read.nn_quantiles, first.nn_quantiles, atol=1e-6)
        # A new measurement (as ingest stores after adding tracks) replaces the kept one.
        with conn.transaction():
            calibrate(conn, model_version=MODEL, seed=1)
        fresh = load_calibration(conn, model_version=MODEL, memo=memo)
        assert fresh is not read and fresh is not None
        assert not np.allclose(fresh.sample, read.sample)
        # Without a memo every call reads the row (the old behaviour), with equal values.
        plain = load_calibration(conn, model_version=MODEL)
        assert plain is not fresh
        np.testing.assert_array_equal(plain.sample, fresh.sample)


def test_library_growth_past_the_drift_remeasures_even_with_a_kept_one(db):
    memo: dict = {}
    with autocommit(db) as conn:
        _library(conn, n_tracks=2)
        kept = load_calibration(conn, model_version=MODEL, memo=memo)
        kept = load_calibration(conn, model_version=MODEL, memo=memo)
        assert kept is not None and kept.n_segments == 60
        _library(conn, n_tracks=2, seed=5)  # twice the segments: beyond the 25 % drift
        grown = load_calibration(conn, model_version=MODEL, memo=memo)
        assert grown is not None and grown.n_segments == 120
