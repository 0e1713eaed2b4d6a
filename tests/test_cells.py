"""Coarse cells for filtered search: assigned on insert, k results kept, exact top-k matched, idempotent retraining."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.db import autocommit
from cadenza.migrations import SQL_DIR, apply_migrations
from retrieval import cells as cells_mod
from retrieval.analysis import SegmentData, TrackAnalysis
from retrieval.filters import filter_sql
from retrieval.nearest import nearest
from retrieval.store import write_track
from retrieval.track_scan import NearestQuery
from retrieval.types import Filters
from tests.helpers_db import truncate_all

MV = "cells-test"
N_COMPOSERS, TRACKS_PER, SEGS_PER, DIM = 16, 10, 25, 128
#: Small cells (~12 segments when trained on half the library) so the cell route stays within its
#: probe budget (30 % of the cells) on a library of a few thousand segments.
N_CELLS = 160
KEYS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def _library(seed: int = 0) -> list[dict]:
    """Tracks whose 128-d segments cluster by composer, then by track (the filter trap's shape)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_COMPOSERS, DIM)).astype(np.float32) * 3
    tracks = []
    for c in range(N_COMPOSERS):
        for t in range(TRACKS_PER):
            centre = centres[c] + 1.5 * rng.standard_normal(DIM).astype(np.float32)
            vecs = centre + rng.standard_normal((SEGS_PER, DIM)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            key, mode = int(rng.integers(12)), ("major", "minor")[int(rng.integers(2))]
            tracks.append({"composer": f"C{c}", "hash": f"h{c}-{t}", "vecs": vecs, "key": key, "mode": mode})
    return tracks


def _analysis(track: dict) -> TrackAnalysis:
    desc = {
        "chroma_mean": [1 / 12] * 12, "key_index": track["key"], "mode": track["mode"], "key_confidence": 0.5,
        "tempo_bpm": 100.0, "loudness_db": -20.0, "brightness_hz": 1500.0, "onset_density": 2.0,
        "valence": 0.0, "arousal": 0.0,
    }  # fmt: skip
    segs = [
        SegmentData(2.0 * i, 2.0 * i + 10, v, dict(desc), np.zeros((5, 12), np.float16))
        for i, v in enumerate(track["vecs"])
    ]
    return TrackAnalysis(SEGS_PER * 2.0 + 8, MV, segs, np.zeros((10, 12), np.float16))


def _insert(db, tracks: list[dict]) -> None:
    with autocommit(db) as conn:
        for tr in tracks:
            tr["id"] = write_track(
                conn, content_hash=tr["hash"], path=f"/x/{tr['hash']}", meta={"composer": tr["composer"]},
                analysis=_analysis(tr),
            )  # fmt: skip


def _exact_tracks(tracks: list[dict], q: np.ndarray, allowed, k: int) -> list[int]:
    best = {tr["id"]: float((tr["vecs"] @ q).max()) for tr in tracks if allowed(tr)}
    return sorted(best, key=lambda t: -best[t])[:k]


def _first_tracks(rows, k: int) -> list[int]:
    seen: list[int] = []
    for r in sorted(rows, key=lambda r: r[-1]):
        if r[1] not in seen:
            seen.append(r[1])
    return seen[:k]


def _cells(db) -> dict[int, int | None]:
    with db.connection() as conn:
        return {int(i): c for i, c in conn.execute("SELECT id, cell FROM segments").fetchall()}


@pytest.fixture(scope="module")
def cell_tracks(session_db):
    """One library for the module's tests (built once; the database is emptied afterwards)."""
    db = session_db
    truncate_all(db)
    tracks = _library()
    with autocommit(db) as conn:
        hnsw = cells_mod._hnsw_indexes(conn)  # built once at the end: inserting into it row by row is slow
        for name, _ in hnsw:
            conn.execute(f'DROP INDEX "{name}"')  # type: ignore[call-overload]
    try:
        _insert(db, tracks[::2])  # half the library: cells are trained on it
        with autocommit(db) as conn:
            state = cells_mod.train_cells(conn, model_version=MV, n_cells=N_CELLS)
        assert state is not None and state.n_segments == len(tracks[::2]) * SEGS_PER
        _insert(db, tracks[1::2])  # the other half gets its cells on insert
    finally:
        with autocommit(db) as conn:
            for _, definition in hnsw:
                conn.execute(definition)  # type: ignore[call-overload]
    yield tracks
    truncate_all(db)


def test_new_segments_get_their_nearest_cell_on_insert(session_db, cell_tracks):
    db = session_db
    cells = _cells(db)
    assert len(cells) == len(cell_tracks) * SEGS_PER and None not in cells.values()
    # The SQL rule on insert is the bulk (numpy) rule: nearest fine centroid of the 3 nearest groups.
    with db.connection() as conn:
        cent = {c: v.to_numpy() for c, g, v in conn.execute("SELECT cell, grp, centroid FROM cell_centroids WHERE model_version = %s", (MV,))}  # fmt: skip
        grp = dict(
            conn.execute("SELECT cell, grp FROM cell_centroids WHERE model_version = %s", (MV,)).fetchall()
        )
        coarse = dict(
            conn.execute("SELECT grp, centroid FROM cell_groups WHERE model_version = %s", (MV,)).fetchall()
        )
    n = len(cent)
    index = cells_mod.CellIndex(
        centroids=np.stack([cent[i] for i in range(n)]),
        coarse=np.stack([coarse[g].to_numpy() for g in range(len(coarse))]),
        members=[np.asarray([c for c in range(n) if grp[c] == g]) for g in range(len(coarse))],
    )
    later = [tr for tr in cell_tracks[1::2]]
    with db.connection() as conn:
        ids = [int(r[0]) for r in conn.execute("SELECT id FROM segments WHERE track_id = ANY(%s) ORDER BY id", ([tr["id"] for tr in later],))]  # fmt: skip
    want = index.assign(np.concatenate([tr["vecs"] for tr in later]))
    agree = np.mean([cells[i] == int(w) for i, w in zip(ids, want, strict=True)])
    assert agree >= 0.99, agree  # float32 in numpy vs float8 distances in SQL: rare ties may differ


def test_cell_route_keeps_k_and_matches_exact_top_k(session_db, cell_tracks):
    db = session_db
    rng = np.random.default_rng(5)
    k = 3
    for qi in range(8):
        c = int(rng.integers(N_COMPOSERS))
        tr = cell_tracks[c * TRACKS_PER + int(rng.integers(TRACKS_PER))]
        q = tr["vecs"].mean(0) + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        q /= np.linalg.norm(q)
        where, params = filter_sql(Filters(exclude_composers=(tr["composer"],)), model_version=MV)
        with autocommit(db) as conn:
            found = nearest(
                conn,
                NearestQuery(q, where, params, 100, k),
                restrictive=True,
                iterative=False,
                cell_min_rows=0,
            )
        assert found.path == "cells", (qi, found.path)
        got = _first_tracks(found.rows, k)
        assert len(got) == k and all(r[5] != tr["composer"] for r in found.rows)
        assert got == _exact_tracks(
            cell_tracks, q, lambda t, comp=tr["composer"]: t["composer"] != comp, k
        ), qi
        assert max(sum(r[1] == t for r in found.rows) for t in got) <= 3  # best 3 windows per track


def test_unfiltered_query_short_of_tracks_falls_back_to_cells(session_db, cell_tracks):
    # 100 HNSW rows cover only a few tracks of 25 tightly clustered windows each: asking for 10
    # distinct tracks sends the unfiltered query to the cells, which find the exact top 10.
    tr = cell_tracks[37]
    q = tr["vecs"][3]
    where, params = filter_sql(Filters(), model_version=MV)
    with autocommit(session_db) as conn:
        found = nearest(
            conn, NearestQuery(q, where, params, 100, 10), restrictive=False, iterative=False, cell_min_rows=0
        )
    assert found.path == "cells", found.path
    assert _first_tracks(found.rows, 10) == _exact_tracks(cell_tracks, q, lambda t: True, 10)


def test_restrictive_filter_returns_every_match_when_fewer_than_wanted(session_db, cell_tracks):
    db = session_db
    # One key and mode: a handful of tracks. The cell route cannot see 6k of them, so the exact
    # scan answers, and every matching track comes back (k results whenever k exist).
    key, mode = cell_tracks[0]["key"], cell_tracks[0]["mode"]
    matching = [tr for tr in cell_tracks if tr["key"] == key and tr["mode"] == mode]
    q = cell_tracks[0]["vecs"][0]
    where, params = filter_sql(Filters(key=KEYS[key], mode=mode), model_version=MV)
    with autocommit(db) as conn:
        found = nearest(
            conn, NearestQuery(q, where, params, 100, len(matching)), restrictive=True, iterative=False,
            cell_min_rows=0,
        )  # fmt: skip
    assert found.path == "exact"
    assert _first_tracks(found.rows, 100) == _exact_tracks(cell_tracks, q, lambda t: t in matching, 100)


def test_retraining_is_idempotent_and_maintenance_follows_growth(session_db, cell_tracks):
    db = session_db
    before = _cells(db)
    with autocommit(db) as conn:
        first = cells_mod.train_cells(conn, model_version=MV, n_cells=N_CELLS)
        after_first = _cells(db)
        cent1 = conn.execute("SELECT cell, centroid FROM cell_centroids ORDER BY cell").fetchall()
        second = cells_mod.train_cells(conn, model_version=MV, n_cells=N_CELLS)
        cent2 = conn.execute("SELECT cell, centroid FROM cell_centroids ORDER BY cell").fetchall()
    assert first is not None and second is not None
    assert first.n_segments == len(cell_tracks) * SEGS_PER and second.moved == 0
    assert _cells(db) == after_first and set(before) == set(after_first)
    assert [(c, v.to_list()) for c, v in cent1] == [(c, v.to_list()) for c, v in cent2]
    # Maintenance: nothing to do at the trained size; a forgotten cell is filled in; too small a library
    # for a model version without cells gets none.
    with db.connection() as conn:
        sid = conn.execute("SELECT min(id) FROM segments").fetchone()[0]
        conn.execute("UPDATE segments SET cell = NULL WHERE id = %s", (sid,))
        conn.commit()
    state = cells_mod.maintain_cells(db, model_version=MV)
    assert state is not None and state.n_segments == first.n_segments
    assert _cells(db)[sid] == after_first[sid]
    assert cells_mod.maintain_cells(db, model_version="no-such-model") is None


# The tests below empty the database (the `db` fixture): keep them after the module-library tests.


def test_maintain_trains_past_the_threshold_and_small_libraries_have_no_cells(db):
    tracks = _library(seed=1)[:40]
    _insert(db, tracks)
    assert cells_mod.maintain_cells(db, model_version=MV, min_segments=10_000) is None
    assert set(_cells(db).values()) == {None}
    state = cells_mod.maintain_cells(db, model_version=MV, min_segments=500)
    assert state is not None and abs(state.n_cells - 40 * SEGS_PER // cells_mod.CELL_SIZE) <= 3
    assert None not in _cells(db).values()


def test_migrations_apply_twice_cleanly(session_db):
    with session_db.connection() as conn:
        conn.autocommit = True
        assert apply_migrations(conn) == []  # already applied: nothing to do
        conn.execute((SQL_DIR / "004_cells.sql").read_text())  # and the file itself is re-runnable
        cols = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'segments'")}  # fmt: skip
    assert "cell" in cols
