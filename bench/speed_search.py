"""The query side of ``bench speed``: Cadenza against Wav2Vec2 + FAISS per query and at a larger size."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import pgbench_db
from bench.library import SAMPLE_RATE
from bench.report import percentiles


def query_pipelines(
    *, db: Any, embedder: Any, w2v: Any, clips: list[np.ndarray], threads: int
) -> dict[str, Any]:
    """Per-query wall time of the two pipelines on the same clips, at the ingested library's size."""
    import faiss
    import torch
    from pgvector import Vector

    from encoder.features import acoustic_features

    with db.connection() as conn:
        n_lib = int(pgbench_db.fetch_one(conn, "SELECT count(*) FROM segments")[0])
    rng = np.random.default_rng(1)
    lib768 = rng.standard_normal((max(n_lib, 1), w2v.dim), dtype=np.float32)
    lib768 /= np.linalg.norm(lib768, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(w2v.dim)
    index.add(lib768)
    torch.set_num_threads(1)  # per query, as the server runs (batch 1 stalls on 2 threads under load)
    faiss.omp_set_num_threads(1)
    cad, w2 = [], []
    with db.connection() as conn:
        conn.execute("SET hnsw.ef_search = 40")
        for y in clips:
            t0 = time.perf_counter()
            fr = acoustic_features(y=y)
            e = embedder.embed_windows(windows=fr[None, :100])[0]
            conn.execute(
                "SELECT id FROM segments ORDER BY embedding <=> %s LIMIT 10", (Vector(e),), prepare=False
            ).fetchall()
            cad.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            v = w2v.embed_audio(clips=y[None, : 10 * SAMPLE_RATE], batch_size=1)
            index.search(v, 10)
            w2.append((time.perf_counter() - t0) * 1000)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    c, w = percentiles(cad), percentiles(w2)
    return {
        "library_segments": n_lib,
        "cadenza_ms": c,
        "wav2vec2_faiss_ms": w,
        "ratio_p50": w["p50"] / c["p50"],
    }


def search_at_size(*, n: int, seed: int, workdir: Path, threads: int) -> dict[str, Any]:
    """Search stage alone at ``n`` vectors: pgvector HNSW (128-d) vs FAISS IndexFlatIP (768-d)."""
    import faiss
    from pgvector import Vector

    from bench.synthetic import make_library
    from bench.synthetic_db import load_library

    lib = make_library(n_segments=n, seed=seed)
    home = workdir / f"size-{n}"
    db = pgbench_db.open_temp_database(home)
    try:
        db = pgbench_db.tune_and_restart(db, home, maintenance_work_mem="1GB", shared_buffers="512MB")
        load_library(db, lib)
        idx = pgbench_db.build_hnsw(db)
        queries, _ = lib.queries(n=100, seed=seed + 5)
        pg_ms = []
        with db.connection() as conn:
            conn.execute("SET hnsw.ef_search = 40")
            for q in queries:
                t0 = time.perf_counter()
                conn.execute(
                    "SELECT id FROM segments ORDER BY embedding <=> %s LIMIT 10", (Vector(q),), prepare=False
                ).fetchall()
                pg_ms.append((time.perf_counter() - t0) * 1000)
    finally:
        db.close()
    rng = np.random.default_rng(seed)
    big = rng.standard_normal((n, 768), dtype=np.float32)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatIP(768)
    t0 = time.perf_counter()
    index.add(big)
    add_s = time.perf_counter() - t0
    fq = rng.standard_normal((100, 768), dtype=np.float32)
    f_ms = []
    for q in fq:
        t0 = time.perf_counter()
        index.search(q[None], 10)
        f_ms.append((time.perf_counter() - t0) * 1000)
    pg, fa = percentiles(pg_ms), percentiles(f_ms)
    return {
        "n": n,
        "pgvector_hnsw_ms": pg,
        "pgvector_build_s": idx["build_s"],
        "pgvector_bytes_per_segment": idx["bytes_per_segment"],
        "faiss_flat_ms": fa,
        "faiss_add_s": add_s,
        "faiss_bytes_per_vector": 768 * 4,
        "ratio_p50_faiss_over_pgvector": fa["p50"] / pg["p50"],
    }
