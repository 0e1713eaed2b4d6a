"""The markdown sections of ``bench speed``'s report (the JSON holds every number)."""

from __future__ import annotations

from typing import Any

from bench.ingest_speed import INGEST_TARGET_X, ingest_rows
from bench.query_stages import STAGES
from bench.report import Report, md_table

Row = tuple[str, Any]


def _embedding_rows(d: dict[str, Any]) -> list[Row]:
    ie = d["ingest_embedding"]
    return [
        (
            f"encoder inference, windows/s (batched, {d['threads']} threads; target ≥ 200)",
            d["encoder_windows_per_s"],
        ),
        (
            "encoder inference, windows per CPU-second (× threads = idle-core estimate)",
            d.get("encoder_windows_per_cpu_s"),
        ),
        ("ingest embedding: Cadenza windows/s (features + encoder)", ie["cadenza_windows_per_s"]),
        ("ingest embedding: Wav2Vec2-base windows/s (same windows)", ie["wav2vec2_windows_per_s"]),
        (
            "ingest embedding ratio Cadenza / Wav2Vec2 (wall-clock throughput)",
            ie["ratio_cadenza_over_wav2vec2"],
        ),
        (
            "ingest embedding ratio, CPU-seconds per window Wav2Vec2 / Cadenza",
            ie.get("ratio_cpu_time_wav2vec2_over_cadenza"),
        ),
    ]


def _end_to_end_rows(d: dict[str, Any]) -> list[Row]:
    return [
        (
            "end-to-end ingest realtime factor, {:.0f} min library (retrieval.ingest, {} lanes; target ≥ {:.0f})".format(
                d.get("ingest_large", {}).get("audio_seconds", 0) / 60,
                d.get("ingest_large", {}).get("workers"),
                INGEST_TARGET_X,
            ),
            d.get("ingest_large", {}).get("realtime_factor"),
        ),
        (
            "end-to-end ingest realtime factor, the {:.0f} min query library (start-up dominates)".format(
                d.get("ingest", {}).get("audio_seconds", 0) / 60
            ),
            d.get("ingest", {}).get("realtime_factor"),
        ),
    ]


def _query_rows(d: dict[str, Any]) -> list[Row]:
    qp = d.get("query_pipeline", {})
    sz = d.get("search_at_size", {})
    return [
        (
            "query p50 ms, Cadenza (features + encoder + pgvector HNSW; 1 thread)",
            qp.get("cadenza_ms", {}).get("p50"),
        ),
        ("query p50 ms, Wav2Vec2 + FAISS IndexFlatIP (1 thread)", qp.get("wav2vec2_faiss_ms", {}).get("p50")),
        ("query ratio Wav2Vec2+FAISS / Cadenza (p50)", qp.get("ratio_p50")),
        (
            "search p50 ms at {} vectors: pgvector HNSW (128-d)".format(f"{sz.get('n', 0):,}"),
            sz.get("pgvector_hnsw_ms", {}).get("p50"),
        ),
        (
            "search p50 ms at {} vectors: FAISS flat (768-d)".format(f"{sz.get('n', 0):,}"),
            sz.get("faiss_flat_ms", {}).get("p50"),
        ),
    ]


def _footprint_rows(d: dict[str, Any]) -> list[Row]:
    return [
        (
            "bytes per segment: Cadenza in PostgreSQL (heap + all indexes)",
            d.get("library_index", {}).get("bytes_per_segment"),
        ),
        ("bytes per vector: Wav2Vec2 768-d float32 in FAISS flat", 768 * 4),
        (
            "HNSW build s / size MiB (ingested library)",
            f"{d.get('library_index', {}).get('build_s', float('nan')):.2f} s / {d.get('library_index', {}).get('hnsw_bytes', 0) / 2**20:.2f} MiB",
        ),
        (
            "server RSS idle / peak MiB under load",
            f"{d.get('server', {}).get('rss_idle_mib', float('nan')):.0f} / {d.get('server', {}).get('rss_peak_mib', float('nan')):.0f}",
        ),
    ]


def _with_percentiles(items: Any, *, fmt: str) -> list[Row]:
    """(measure, value) rows where a percentile dict reads as one "p50 … / p95 … ms" cell."""
    return [
        (k, v if not isinstance(v, dict) else f"p50 {v['p50']:{fmt}} / p95 {v['p95']:{fmt}} ms")
        for k, v in items
    ]


def sections(report: Report, d: dict[str, Any]) -> None:
    """Add the speed report's sections to ``report`` from its data ``d``."""
    ie = d["ingest_embedding"]
    sz = d.get("search_at_size", {})
    head = _embedding_rows(d) + _end_to_end_rows(d) + _query_rows(d) + _footprint_rows(d)
    report.section("Headline", md_table(["measure", "value"], head))
    qs = d.get("query_stages", {})
    report.section(
        "Query latency per stage (real retrieval.search, 10-s WAV clips, 1 torch thread like the server)",
        md_table(
            ["stage", "p50 ms", "p95 ms", "mean ms", "n"],
            [(s, qs[s]["p50"], qs[s]["p95"], qs[s]["mean"], qs[s]["n"]) for s in STAGES if s in qs],
        ),
    )
    if d.get("ingest_large"):
        report.section(
            "Ingest end to end (real retrieval.ingest into a fresh database)",
            md_table(["measure", "value"], ingest_rows(d["ingest_large"])),
        )
    report.section(
        "Ingest of the query library and embedding throughput",
        md_table(
            ["measure", "value"], [(k, v) for k, v in {**d.get("ingest", {}), **ie}.items() if k != "failed"]
        ),
    )
    if sz:
        report.section(
            "Search stage at a larger synthetic size",
            md_table(
                ["measure", "value"],
                _with_percentiles(sz.items(), fmt=".2f"),
            ),
        )
    srv = d.get("server", {})
    if srv:
        report.section(
            "Server under a bounded loopback load (cadenza serve, POST /api/search with 10-s WAV clips)",
            md_table(
                ["measure", "value"],
                _with_percentiles(
                    ((k, v) for k, v in srv.items() if k != "server_log_tail"),  # the tail is in the JSON
                    fmt=".0f",
                ),
            ),
        )
