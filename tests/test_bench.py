"""Smoke tests of the benchmark harness (bench/): metrics on constructed data, report files,
baseline features, the synthetic library, the in-memory search, and the scale benchmark's
load → index → filtered-candidate path on a tiny library in the real test database."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from bench import metrics
from bench.baselines import STATS_DIM, StatsEmbedder, stats_features
from bench.report import Report, fmt, md_table, percentiles
from bench.synthetic import SEGMENTS_PER_TRACK, make_library
from cadenza.errors import InputError
from cadenza.synth_audio import random_chord_track

# -- metrics ----------------------------------------------------------------------------------


def test_passage_hits_need_right_work_and_time():
    ranked_work = np.array([[3, 1, 1], [2, 2, 5], [-1, -1, -1]])
    ranked_start = np.array([[10.0, 40.0, 12.0], [0.0, 30.0, 30.0], [0.0, 0.0, 0.0]])
    hits = metrics.passage_hits(
        ranked_work=ranked_work,
        ranked_start=ranked_start,
        true_work=np.array([1, 2, 0]),
        true_start=np.array([10.0, 32.0, 0.0]),
    )
    # query 0: work 1 at 40 s is too far, work 1 at 12 s is a hit at rank 3; query 1: rank 2; query 2: nothing.
    assert hits.tolist() == [[False, False, True], [False, True, False], [False, False, False]]
    assert metrics.hit_rate_at(hits, 1) == 0.0
    assert metrics.hit_rate_at(hits, 3) == pytest.approx(2 / 3)
    assert metrics.mrr(hits) == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)


def test_literal_repeat_finds_a_section_played_again_and_nothing_else():
    rng = np.random.default_rng(0)
    a, b, c = (rng.normal(size=(100, 16)) for _ in range(3))  # three different 10-s sections
    mel = np.concatenate([a, b, a, c])  # A B A C at 0, 10, 20, 30 s (10 fps)
    # a result at 21 s for a query at 0 s: the second A, within 2.5 s of its start
    assert metrics.literal_repeat(mel=mel, true_start_s=0.0, found_start_s=21.0, length_s=10.0)
    assert metrics.literal_repeat(mel=mel, true_start_s=20.0, found_start_s=1.5, length_s=10.0)
    # B and C are not repeats of A, nor a nearby start of the true passage itself
    assert not metrics.literal_repeat(mel=mel, true_start_s=0.0, found_start_s=10.0, length_s=10.0)
    assert not metrics.literal_repeat(mel=mel, true_start_s=0.0, found_start_s=30.0, length_s=10.0)
    assert not metrics.literal_repeat(mel=mel, true_start_s=10.0, found_start_s=25.0, length_s=10.0)
    # 4 s away the first A overlaps itself only by 60 %: not the same passage
    assert not metrics.literal_repeat(mel=mel, true_start_s=0.0, found_start_s=4.0, length_s=10.0)
    # a slightly different repeat (an ornament, another voicing) is not literal
    varied = np.concatenate([a, b, a + rng.normal(scale=1.0, size=a.shape), c])
    assert not metrics.literal_repeat(mel=varied, true_start_s=0.0, found_start_s=20.0, length_s=10.0)


def test_precision_counts_empty_ranks_as_misses():
    rel = np.array([[True, False, True, False], [False, False, False, False]])
    assert metrics.precision_at_k(relevant=rel, k=4) == pytest.approx((2 / 4 + 0) / 2)


def test_recall_and_exact_top_k_agree_with_brute_force():
    rng = np.random.default_rng(0)
    lib = rng.standard_normal((300, 16)).astype(np.float32)
    lib /= np.linalg.norm(lib, axis=1, keepdims=True)
    q = lib[:5] + 0.01
    allowed = rng.random((5, 300)) < 0.5
    got = metrics.exact_top_k(queries=q, library=lib, k=7, allowed=allowed)
    for i in range(5):
        sims = np.where(allowed[i], lib @ q[i], -np.inf)
        assert got[i].tolist() == np.argsort(-sims)[:7].tolist()
        assert allowed[i, got[i]].all()
    assert metrics.recall_at_k(found=got, truth=got) == 1.0
    half = got.copy()
    half[:, 4:] = -1
    assert metrics.recall_at_k(found=half, truth=got) == pytest.approx(4 / 7)
    # fewer allowed rows than k: the rest is -1
    only_two = np.zeros((1, 300), bool)
    only_two[0, [3, 9]] = True
    assert sorted(metrics.exact_top_k(queries=q[:1], library=lib, k=4, allowed=only_two)[0].tolist()) == [
        -1,
        -1,
        3,
        9,
    ]


# -- report ----------------------------------------------------------------------------------


def test_report_writes_strict_json_and_markdown(tmp_path):
    rep = Report(name="demo", title="Demo", machine={"cpu": "x", "cores": 2})
    rep.data = {"value": np.float32(0.5), "nan": float("nan"), "arr": np.arange(3), "n": np.int64(4)}
    rep.notes.append("a note")
    rep.section("Table", md_table(["a", "b"], [(1, 0.123456), ("x|y", None)]))
    js, md = rep.write(tmp_path)
    payload = json.loads(js.read_text())
    assert payload["results"] == {"value": 0.5, "nan": None, "arr": [0, 1, 2], "n": 4}
    text = md.read_text()
    assert "# Demo" in text and "- a note" in text and "| 1 | 0.123 |" in text and "x\\|y" in text
    assert "| cores | 2 |" in text
    assert fmt(12345.6) == "12,346" and fmt(float("nan")) == "—" and fmt(True) == "yes"
    p = percentiles([1.0, 2.0, 3.0, 4.0])
    assert p["p50"] == 2.5 and p["n"] == 4


def test_machine_info_names_versions():
    from bench.report import machine_info

    info = machine_info(postgres="16.2", pgvector="0.6.2")
    for key in (
        "cpu",
        "cores",
        "ram_gib",
        "python",
        "torch",
        "postgres",
        "pgvector",
        "git_commit",
        "date_utc",
    ):
        assert info[key] not in (None, "")


# -- baselines ----------------------------------------------------------------------------------


def test_stats_features_shape_lengths_and_normalization():
    from encoder.features import acoustic_features

    frames = acoustic_features(y=random_chord_track(seconds=12.0, seed=1))[:100]  # [100, 143]
    padded = np.concatenate([frames[:60], np.full((40, frames.shape[1]), 99.0, np.float32)])
    wins = np.stack([frames, padded])
    raw = stats_features(windows=wins, lengths=np.array([100, 60]))
    assert raw.shape == (2, STATS_DIM) and np.isfinite(raw).all()
    # frames past the length are ignored: same as the 60-frame window on its own
    np.testing.assert_allclose(raw[1], stats_features(windows=frames[None, :60])[0], rtol=1e-5, atol=1e-5)
    emb = StatsEmbedder.fit(windows=wins, lengths=np.array([100, 60])).embed_windows(
        windows=wins, lengths=np.array([100, 60])
    )
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)


# -- synthetic library -----------------------------------------------------------------------------


def test_synthetic_library_is_chunk_invariant_and_clustered_by_composer():
    lib = make_library(n_segments=3000, seed=3)
    full = lib.segment_vectors(start=0, stop=3000)
    np.testing.assert_array_equal(full[77:1234], lib.segment_vectors(start=77, stop=1234))
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, rtol=1e-5)
    assert lib.n_tracks == 3000 // SEGMENTS_PER_TRACK
    q, comp = lib.queries(n=50, seed=1)
    seg_comp = lib.track_composer[lib.segment_track(start=0, stop=3000)]
    top = np.argsort(-(q @ full.T), axis=1)[:, :10]
    # "exclude the query's composer" must be a hard filter: most neighbours share the composer
    assert (seg_comp[top] == comp[:, None]).mean() > 0.8


# -- in-memory search --------------------------------------------------------------------------------


def test_window_starts_match_embed_track_and_library_refinds_a_passage():
    from bench.memsearch import Library, embed_queries, features, window_starts
    from encoder.embed import Embedder

    emb = Embedder.untrained(seed=0)
    for n in (40, 60, 100, 137, 251):
        starts_s, _ = emb.embed_track(frames=np.zeros((n, 143), np.float32))
        assert (window_starts(n_frames=n) / 10.0).tolist() == starts_s.tolist()

    tracks = {f"t{i}": random_chord_track(seconds=30.0, seed=10 + i, key=i * 5) for i in range(3)}
    lib = Library.build({k: features(y=y) for k, y in tracks.items()})
    lib.embed("untrained", emb)
    assert lib.n_segments == sum(len(window_starts(n_frames=len(f))) for f in lib.frames.values())
    clip_frames = lib.frames["t1"][40:140]  # the 10 s from 4.0 s of track 1, as the library saw them
    q = embed_queries(emb, [clip_frames])[0]
    tracks_found, starts, scores = lib.search("untrained", query=q, query_frames=clip_frames, k=3)
    assert tracks_found[0] == 1 and abs(starts[0] - 4.0) <= 2.5
    assert scores[0] >= scores[1]
    excl, _, _ = lib.search("untrained", query=q, k=3, exclude_track=1)
    assert 1 not in excl.tolist()


# -- scale: load, index, filtered candidates in the real database ---------------------------------------------


def test_scale_load_index_and_filtered_candidates(db):
    from bench import pgbench_db
    from bench.adapters import filtered_candidates, top_tracks
    from bench.synthetic_db import MODEL_VERSION, exact_filtered_tracks, filter_cases, load_library

    lib = make_library(n_segments=2400, seed=5)
    try:
        load_library(db, lib)
        idx = pgbench_db.build_hnsw(db)
        assert idx["rows"] == 2400 and idx["hnsw_bytes"] > 0 and idx["bytes_per_segment"] > 128 * 4
        vectors = lib.segment_vectors(start=0, stop=2400)
        seg_track = np.arange(2400) // SEGMENTS_PER_TRACK
        q, comp = lib.queries(n=3, seed=2)
        case = next(c for c in filter_cases(lib, q_comp=comp, seed=0) if c.name == "exclude own composer")
        truth = exact_filtered_tracks(vectors, seg_track, q, case.mask)
        for i in range(3):
            cand = filtered_candidates(
                db, vector=q[i], filters=case.filters[i], k=10, model_version=MODEL_VERSION
            )
            tracks = [t - 1 for t in top_tracks(cand.track_ids, 10)]
            assert tracks, "the filtered search returned nothing"
            assert all(lib.track_composer[t] != comp[i] for t in tracks)  # the filter is honoured
            assert set(truth[i][truth[i] >= 0]).isdisjoint(np.flatnonzero(lib.track_composer == comp[i]))
    finally:
        pgbench_db.build_hnsw(db)  # leave the schema's index in place for other tests


def test_scale_query_stages_through_search(db, tmp_path):
    """The per-stage table of bench scale: real audio queries through retrieval.search on synthetic rows."""
    from bench import pgbench_db
    from bench.query_stages import STAGES, chord_clips
    from bench.scale_report import stage_table, stage_target_note
    from bench.synthetic_db import load_library, search_stages
    from encoder.embed import Embedder

    lib = make_library(n_segments=1200, seed=6)
    try:
        load_library(db, lib)
        pgbench_db.build_hnsw(db)
        with db.connection() as conn:
            no_seq = pgbench_db.fetch_one(conn, "SELECT count(*) FROM segments WHERE chroma_seq IS NULL")[0]
            n_chroma = pgbench_db.fetch_one(conn, "SELECT count(*) FROM track_chroma")[0]
        assert no_seq == 0 and n_chroma == lib.n_tracks  # what rerank and localize read
        clips = chord_clips(n=3, out_dir=tmp_path / "clips", seed=0)
        measured = search_stages(db, embedder=Embedder.untrained(seed=0), clips=clips, warmup=1)
    finally:
        pgbench_db.build_hnsw(db)  # leave the schema's index in place for other tests
    assert set(measured["stages"]) == set(STAGES)
    for stage in STAGES:
        p = measured["stages"][stage]
        assert p["n"] == 3, stage  # every query reached every stage
        for key in ("p50", "p95", "mean"):
            assert np.isfinite(p[key]) and p[key] > 0, (stage, key, p[key])
    assert measured["empty"] == 0 and sum(measured["routes"].values()) == 3
    # the stored chroma was used: progression scores in rerank, localization against the track chroma
    assert measured["progression_share"] > 0.5 and measured["localized_share"] > 0.5
    table = stage_table([{"n_segments": 1200, "query_stages": measured}])
    lines = table.splitlines()
    assert all(s in lines[0] for s in STAGES) and len(lines) == 3 and lines[2].startswith("| 1,200 |")
    assert "total p50" in stage_target_note([{"n_segments": 1200, "query_stages": measured}])


# -- CLI ---------------------------------------------------------------------------------------------


def test_cli_parses_and_rejects_bad_sizes():
    from bench import cli

    parser = argparse.ArgumentParser()
    cli.configure("bench", parser)
    args = parser.parse_args(["scale", "--quick", "--sizes", "10000,100_000"])
    assert args.which == "scale" and args.quick
    assert cli._sizes(args.sizes) == [10000, 100000]
    with pytest.raises(InputError):
        cli._sizes("ten")
    with pytest.raises(InputError):
        cli._sizes("10")
