"""bench/context.py on a small ingested library (six tracks, three composers): every row is measured,
switching a signal off gives the context-free results exactly, and each answer's own report of what
a signal changed agrees with the measured change. Real PostgreSQL, the real search."""

from __future__ import annotations

import json

from bench.context import run_context
from tests.helpers_app import ingest_library


def test_context_bench_rows_and_exactness(db, settings, tmp_path):
    lib = ingest_library(db, tmp_path / "library", settings)
    report = run_context(
        settings=settings, out_dir=tmp_path / "out", n_queries=3, seed=1, build=False, db=db,
        embedder=lib.embedder,
    )  # fmt: skip
    data = json.loads((tmp_path / "out" / "context.json").read_text())["results"]
    assert data["queries"] == 3 and data["library"]["tracks"] == 6
    rows = {(r["signal"], r["condition"]) for r in data["rows"]}
    assert {s for s, _ in rows} == {"time_of_day", "history", "mood", "all"}
    assert len([1 for s, _ in rows if s == "time_of_day"]) == 5  # one row per day part
    for r in data["rows"]:
        assert r["off_exact"] == [3, 3], r  # a switch that leaked would break this
        assert 0.0 <= r["overlap_min"] <= r["overlap_mean"] <= 1.0
        if r["signal"] != "all":
            assert r["report_agrees"] == [3, 3], r
    # No play of the benchmark's listener is left behind.
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM plays").fetchone()[0] == 0
    md = (tmp_path / "out" / "context.md").read_text()
    assert "switched off = context-free, exactly" in md and report.name == "context"
