"""bench/routes.py: the rule that picks a filtered-candidate route from measured rows."""

from __future__ import annotations

from bench.routes import bytes_per_segment, choose, routes


def _rows(name: str, recalls: list[float], p50s: list[float]) -> list[dict]:
    return [
        {"route": name, "filter": f"f{i}", "recall@10": r, "p50": p}
        for i, (r, p) in enumerate(zip(recalls, p50s, strict=True))
    ]


def test_simplest_qualifying_route_within_20_percent_of_the_fastest_wins():
    simplest, other, cells = routes()[0][0], routes()[1][0], routes()[-1][0]
    rows = (
        _rows(simplest, [0.96, 0.99], [10.0, 11.5])  # worst p50 11.5: within 1.2 x 10
        + _rows(other, [0.97, 0.98], [9.0, 10.0])  # the fastest qualifying
        + _rows(cells, [1.0, 1.0], [5.0, 6.0])
    )
    rows[-1]["recall@10"] = 0.94  # cells miss the target on one filter: never chosen
    got = choose(rows)
    assert got["route"] == simplest and got["fastest_worst_p50"] == 10.0
    assert cells not in got["qualifying"]


def test_too_slow_simple_route_loses_and_no_qualifying_route_is_none():
    simplest, other = routes()[0][0], routes()[1][0]
    rows = _rows(simplest, [0.99, 0.99], [10.0, 30.0]) + _rows(other, [0.99, 0.99], [10.0, 12.0])
    assert choose(rows)["route"] == other
    assert choose(_rows(simplest, [0.5, 0.99], [1.0, 1.0]))["route"] is None


def test_bytes_per_segment_counts_each_routes_own_index():
    store = {
        "table": 1000,
        "segments_pkey": 100,
        "segments_track_idx": 100,
        "segments_embedding_hnsw": 800,
        "segments_embedding_halfvec_hnsw": 500,
        "segments_cell_idx": 50,
        "cell_tables": 50,
    }
    assert bytes_per_segment(store, 10, name="iterative relaxed") == 200.0
    assert bytes_per_segment(store, 10, name="halfvec relaxed, ef 400") == 170.0
    assert bytes_per_segment(store, 10, name="cells (pgvector 0.6 route)") == 210.0
