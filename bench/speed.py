"""``cadenza bench speed``: what ingest and queries cost, against the original design.

Measured in ONE run on the same rendered audio (the machine is shared, so ratios matter
more than absolute times):

* encoder inference, windows/s batched on ``threads`` threads (target ≥ 200/s);
* embedding throughput for ingest — Cadenza (features + encoder, 10-s windows every 2 s)
  vs the original design's Wav2Vec2-base (random weights from its config, nothing
  downloaded) + mean pooling on the same windows — and the ratio;
* per-query cost — Cadenza (features + encoder + pgvector HNSW top-10) vs Wav2Vec2 +
  FAISS ``IndexFlatIP`` — at the ingested library's size and at a larger synthetic size
  (:mod:`bench.speed_search`);
* end-to-end ingest realtime factor with the real ``retrieval.ingest`` (:mod:`bench.ingest_speed`;
  ``python -m bench.ingest_speed`` runs this measurement alone);
* query latency p50/p95 per stage through the real ``retrieval.search`` (decode measured
  with ``cadenza.audio.load_audio`` on the query file, the rest from ``timings_ms``);
* HNSW build time and size, bytes per segment of the ingested library;
* peak RSS of a ``cadenza serve`` process under a bounded loopback query load (:mod:`bench.server_load`).

The report's sections are written by :mod:`bench.speed_report`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import pgbench_db
from bench.ingest_speed import main, measure_ingest, render_ingest_library
from bench.library import SAMPLE_RATE, Renderer, render_library, select_works
from bench.query_stages import measure_stages, write_clips
from bench.report import Report, db_versions, machine_info
from bench.server_load import server_memory
from bench.speed_report import sections
from bench.speed_search import query_pipelines, search_at_size

log = logging.getLogger(__name__)


def _timeit(fn, *, repeat: int = 1) -> float:
    """Seconds per call of ``fn`` (best of ``repeat``; a shared machine only ever adds time)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def encoder_throughput(embedder: Any, *, windows: np.ndarray, repeat: int = 3) -> tuple[float, float]:
    """(windows per wall second, windows per CPU second of this process) of ``embed_windows``.

    The second does not shrink when other processes take the cores: times the thread count
    it estimates the throughput on idle cores.
    """
    embedder.embed_windows(windows=windows[: min(len(windows), 8)])  # warm-up
    c0 = time.process_time()
    wall = _timeit(lambda: embedder.embed_windows(windows=windows), repeat=repeat)
    cpu = (time.process_time() - c0) / repeat
    return len(windows) / wall, len(windows) / max(cpu, 1e-9)


def audio_windows(y: np.ndarray, *, win_s: float = 10.0, hop_s: float = 2.0) -> np.ndarray:
    """Raw-audio windows as ingest cuts them: ``[n]`` → ``[N, win_s * 16000]``."""
    w, h = int(win_s * SAMPLE_RATE), int(hop_s * SAMPLE_RATE)
    starts = range(0, max(y.size - w, 0) + 1, h)
    return np.stack([y[s : s + w] for s in starts]).astype(np.float32)


def _require_bench_extra() -> None:
    try:
        import faiss  # noqa: F401 - the FAISS baseline needs it
        import transformers  # noqa: F401 - the Wav2Vec2 baseline needs it
    except ImportError as exc:
        from cadenza.errors import ConfigError

        raise ConfigError(
            f"the speed benchmark needs the 'bench' extra ({exc.name} is missing); run pip install -e '.[bench]'"
        ) from None


def _encoder_speed(
    embedder: Any, clean: dict[str, np.ndarray], *, quick: bool, threads: int
) -> dict[str, float]:
    """Batched encoder inference on the library's own windows."""
    from bench.memsearch import cut_windows, features, window_starts

    frames = {w: features(y=y) for w, y in clean.items()}
    all_windows = np.concatenate(
        [cut_windows(frames=f, starts=window_starts(n_frames=len(f)))[0] for f in frames.values()]
    )
    per_s, per_cpu_s = encoder_throughput(embedder, windows=all_windows[: 256 if quick else 512])
    log.info("encoder: %.0f windows/s on %d threads", per_s, threads)
    return {"encoder_windows_per_s": per_s, "encoder_windows_per_cpu_s": per_cpu_s}


def _ingest_embedding(
    embedder: Any,
    w2v: Any,
    clean: dict[str, np.ndarray],
    *,
    rng: np.random.Generator,
    quick: bool,
    audio_s: float,
) -> dict[str, Any]:
    """Ingest embedding throughput: Cadenza vs Wav2Vec2 on the same windows."""
    from encoder.features import acoustic_features

    def cadenza_ingest_embed() -> int:
        n = 0
        for y in clean.values():
            st, _ = embedder.embed_track(frames=acoustic_features(y=y))
            n += len(st)
        return n

    n_cad = cadenza_ingest_embed()
    c0 = time.process_time()
    t_cad = _timeit(cadenza_ingest_embed, repeat=2)
    cpu_cad = (time.process_time() - c0) / 2
    raw = np.concatenate([audio_windows(y) for y in clean.values()])
    n_w2v = min(len(raw), 8 if quick else 24)
    w2v_clips = raw[rng.permutation(len(raw))[:n_w2v]]
    w2v.embed_audio(clips=w2v_clips[:2], batch_size=2)  # warm-up
    c0 = time.process_time()
    t_w2v = _timeit(lambda: w2v.embed_audio(clips=w2v_clips, batch_size=8))
    cpu_w2v = time.process_time() - c0
    cad_wps, w2v_wps = n_cad / t_cad, n_w2v / t_w2v
    log.info("ingest embedding: cadenza %.1f win/s, wav2vec2 %.2f win/s", cad_wps, w2v_wps)
    return {
        "cadenza_windows": n_cad,
        "cadenza_s": t_cad,
        "cadenza_windows_per_s": cad_wps,
        "cadenza_realtime_x": audio_s / t_cad,
        "wav2vec2_windows": n_w2v,
        "wav2vec2_s": t_w2v,
        "wav2vec2_windows_per_s": w2v_wps,
        # Each window adds 2 s of new audio at the ingest hop.
        "wav2vec2_realtime_x": w2v_wps * 2.0,
        "ratio_cadenza_over_wav2vec2": cad_wps / w2v_wps,
        # CPU seconds per window: robust to other processes taking the cores.
        "cadenza_cpu_s_per_window": cpu_cad / max(n_cad, 1),
        "wav2vec2_cpu_s_per_window": cpu_w2v / max(n_w2v, 1),
        "ratio_cpu_time_wav2vec2_over_cadenza": (cpu_w2v / max(n_w2v, 1))
        / max(cpu_cad / max(n_cad, 1), 1e-12),
    }


def _query_clips(
    clean: dict[str, np.ndarray], *, n: int, rng: np.random.Generator, out_dir: Path
) -> list[Path]:
    """``n`` random 10-s excerpts of the library, written as WAV query files."""
    names = list(clean)
    pieces = []
    for _ in range(n):
        y = clean[names[int(rng.integers(len(names)))]]
        t = int(rng.uniform(0, max(y.size - 10 * SAMPLE_RATE, 1)))
        pieces.append(y[t : t + 10 * SAMPLE_RATE])
    return write_clips(pieces, out_dir)


def _ingest_and_query(
    data: dict[str, Any],
    *,
    home: Path,
    lib_dir: Path,
    sidecar: Path | None,
    clean: dict[str, np.ndarray],
    embedder: Any,
    spec: Any,
    w2v: Any,
    rng: np.random.Generator,
    quick: bool,
    threads: int,
    workdir: Path,
) -> tuple[tuple[str, str], list[Path]]:
    """Ingest the query library with the real ``retrieval.ingest``, then time queries on it.

    Fills ``data``'s ingest, library_index, query_stages and query_pipeline entries; returns the
    database versions and the query clips written.
    """
    import torch

    from cadenza.audio import load_audio

    db = pgbench_db.open_temp_database(home)
    try:
        with db.connection() as conn:
            versions = db_versions(conn)
        rep = pgbench_db.ingest_folder(
            db, lib_dir, embedder=embedder, spec=spec, metadata_file=sidecar, workers=min(2, threads)
        )
        data["ingest"] = rep.to_json()
        data["ingest"]["workers"] = min(2, threads)
        data["ingest"].pop("stage_cpu_seconds", None)
        log.info("ingest: %s", data["ingest"])
        data["library_index"] = pgbench_db.build_hnsw(db)
        clips = _query_clips(clean, n=12 if quick else 40, rng=rng, out_dir=workdir / "queries")
        data["query_stages"] = measure_stages(db=db, embedder=embedder, clips=clips)["stages"]
        data["query_pipeline"] = query_pipelines(
            db=db,
            embedder=embedder,
            w2v=w2v,
            clips=[load_audio(path=p) for p in clips[: 6 if quick else 12]],
            threads=threads,
        )
        torch.set_num_threads(threads)
    finally:
        db.close()
    return versions, clips


def _server_notes(server: dict[str, Any]) -> list[str]:
    if not (server.get("server_hung") or server.get("errors")):
        return []
    tail = (
        ", then stopped answering (hung); its log tail is in speed.json."
        if server.get("server_hung")
        else "."
    )
    return [f"The server answered {server.get('answered_ok', 0)} of {server.get('requests')} requests" + tail]


def _report(
    data: dict[str, Any], *, audio_note: str, notes: list[str], postgres: str, pgvector: str
) -> Report:
    title = "Speed and cost: Cadenza vs the original Wav2Vec2 + FAISS design"
    machine = machine_info(postgres=postgres, pgvector=pgvector)
    report = Report(name="speed", title=title, machine=machine, data=data)
    report.notes += [
        audio_note,
        "Wav2Vec2-base is built from `Wav2Vec2Config()` with random weights (nothing downloaded): only its speed is compared.",
        f"The machine is shared (load average {machine_info()['load_avg_1_5_15']}): compare the ratios; absolute times are pessimistic.",
        f"Run took {data['seconds'] / 60:.1f} min.",
        *notes,
    ]
    sections(report, data)
    return report


def run_speed(
    *,
    out_dir: Path,
    quick: bool,
    seed: int = 0,
    checkpoint: Path | None,
    midi_cache: Path,
    workdir: Path,
    threads: int = 2,
) -> Report:
    _require_bench_extra()
    import faiss
    import torch

    from bench.baselines import Wav2Vec2Embedder
    from encoder.embed import resolve_embedder

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(seed)
    t_start = time.perf_counter()
    notes: list[str] = []
    data: dict[str, Any] = {"threads": threads}

    works = select_works(per_composer=1 if quick else 2, seed=seed)
    renderer = Renderer(midi_cache=midi_cache, max_seconds=40.0 if quick else 60.0)
    lib_dir = workdir / "library"
    works, clean, sidecar = render_library(works, renderer=renderer, out_dir=lib_dir)
    audio_s = sum(y.size for y in clean.values()) / SAMPLE_RATE
    data["audio"] = {"tracks": len(works), "seconds": audio_s}

    embedder, spec = resolve_embedder(checkpoint)
    data["model_version"] = embedder.model_version
    if str(embedder.model_version).startswith("untrained"):
        notes.append(
            "No trained checkpoint: the (same-architecture, same-speed) untrained encoder was timed."
        )

    data.update(_encoder_speed(embedder, clean, quick=quick, threads=threads))
    w2v = Wav2Vec2Embedder(seed=seed)
    data["ingest_embedding"] = _ingest_embedding(embedder, w2v, clean, rng=rng, quick=quick, audio_s=audio_s)
    home = workdir / "home"
    (pg, pv), clips = _ingest_and_query(
        data, home=home, lib_dir=lib_dir, sidecar=sidecar, clean=clean, embedder=embedder, spec=spec, w2v=w2v,
        rng=rng, quick=quick, threads=threads, workdir=workdir,
    )  # fmt: skip

    # A library big enough that start-up does not dominate.
    big_dir = workdir / "ingest-library"
    big_sidecar, big_s = render_ingest_library(
        out_dir=big_dir, midi_cache=midi_cache, seed=seed, min_seconds=(10 if quick else 30) * 60.0
    )
    data["ingest_large"] = measure_ingest(
        paths=[big_dir], home=workdir / "ingest-home", embedder=embedder, spec=spec,
        metadata_file=big_sidecar, workers=min(2, threads),
    )  # fmt: skip
    log.info("ingest of %.1f min: %.0fx realtime", big_s / 60, data["ingest_large"]["realtime_factor"])

    data["search_at_size"] = search_at_size(
        n=10_000 if quick else 50_000, seed=seed, workdir=workdir, threads=threads
    )
    try:
        server = server_memory(
            home=home, clips=clips, n_requests=20 if quick else 60, concurrency=2, checkpoint=checkpoint
        )
    except Exception as exc:  # the report must still be written; say what failed
        log.warning("server memory measurement failed: %s", exc)
        server = {"error": str(exc)[:300]}
    data["server"] = server
    notes += _server_notes(server)

    data["seconds"] = time.perf_counter() - t_start
    audio_note = (
        f"Audio: {len(works)} held-out works rendered ({audio_s / 60:.1f} min); model {embedder.model_version}; "
        f"torch threads {threads}."
    )
    report = _report(data, audio_note=audio_note, notes=notes, postgres=pg, pgvector=pv)
    report.write(out_dir)
    return report


if __name__ == "__main__":  # the ingest measurement alone, as before it had its own module
    raise SystemExit(main())
