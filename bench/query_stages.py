"""Query latency per stage through the real ``retrieval.search`` (used by bench speed and scale).

Each query is a 10-s WAV file decoded with ``cadenza.audio.load_audio``, so decode is a real
stage; features, embed, search, rerank (and the same-passage check inside it) and localize come from the search's own
``timings_ms``, and total is the search's total plus the decode. Torch runs on one thread
while timing, as the web server runs queries.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.report import percentiles

#: ``passage`` (the same-passage check, retrieval.passage) and ``graph`` (the walk over the pool's track
#: graph, retrieval.track_graph) are part of ``rerank``, shown on their own.
STAGES = ("decode", "features", "embed", "search", "rerank", "passage", "graph", "localize", "total")
SAMPLE_RATE = 16_000
CLIP_SECONDS = 10.0
#: Semitones above the key's tonic of the diatonic major triads I, ii, iii, IV, V, vi.
_TRIADS = ((0, 4, 7), (2, 5, 9), (4, 7, 11), (5, 9, 12), (7, 11, 14), (9, 12, 16))


def _note(*, midi: float, seconds: float, amp: float) -> np.ndarray:
    """A harmonic tone with a short attack and an exponential decay, ``[n]`` float32."""
    t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
    hz = 440.0 * 2.0 ** ((midi - 69) / 12.0)
    y = np.zeros_like(t)
    for h in range(1, 5):
        if hz * h < SAMPLE_RATE / 2:
            y += np.sin(2 * np.pi * hz * h * t) / h
    env = np.minimum(1.0, t / 0.02) * np.exp(-1.5 * t / seconds)
    return (amp * y * env).astype(np.float32)


def chord_clip(*, seconds: float = CLIP_SECONDS, seed: int) -> np.ndarray:
    """Random diatonic triads of 0.5–1.5 s (with a bass note) in a random major key, ``[n]`` float32.

    Tonal audio whose every moment differs, so the query is neither silent nor noise-like
    (search answers those early, without the later stages).
    """
    rng = np.random.default_rng([seed, 11])
    tonic = 48 + int(rng.integers(12))
    parts, n = [], 0
    while n < seconds * SAMPLE_RATE:
        triad, dur = _TRIADS[int(rng.integers(len(_TRIADS)))], float(rng.uniform(0.5, 1.5))
        root = tonic + 12 * int(rng.integers(2))
        part = _note(midi=root - 12 + triad[0], seconds=dur, amp=0.12)
        for step in triad:
            part += _note(midi=root + step, seconds=dur, amp=0.08)
        parts.append(part)
        n += part.size
    return np.clip(np.concatenate(parts)[: int(seconds * SAMPLE_RATE)], -1.0, 1.0)


def write_clips(clips: Iterable[np.ndarray], out_dir: Path) -> list[Path]:
    """Write each clip to ``out_dir/q000.wav`` … (16-bit PCM at 16 kHz); returns the paths."""
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, y in enumerate(clips):
        p = out_dir / f"q{i:03d}.wav"
        sf.write(str(p), y, SAMPLE_RATE, subtype="PCM_16")
        paths.append(p)
    return paths


def chord_clips(*, n: int, out_dir: Path, seed: int) -> list[Path]:
    """``n`` 10-s chord clips (:func:`chord_clip`) written as WAV files into ``out_dir``."""
    return write_clips((chord_clip(seed=seed * 1000 + i) for i in range(n)), out_dir)


class AsModelVersion:
    """A real embedder that search takes for another model version.

    Search only reads segments whose ``model_version`` is the embedder's; a synthetic library
    is written under its own version. Embedding is delegated unchanged, so every query is
    embedded by the real encoder at its real cost.
    """

    def __init__(self, embedder: Any, model_version: str):
        self.embedder = embedder
        self.model_version = model_version
        self.windowing = embedder.windowing

    def embed_track(self, **kwargs: Any) -> Any:
        return self.embedder.embed_track(**kwargs)

    def embed_windows(self, **kwargs: Any) -> Any:
        return self.embedder.embed_windows(**kwargs)


def measure_stages(
    *, db: Any, embedder: Any, clips: list[Path], k: int = 10, warmup: int = 2
) -> dict[str, Any]:
    """Per-stage latency of ``retrieval.search.search`` on each clip, after ``warmup`` untimed queries.

    Returns ``stages`` (stage → p50/p95/mean/n in ms, over the queries that reached the
    stage), ``queries``, ``routes`` (how often each candidate route was taken), ``empty``
    (queries without results), and the shares of returned results whose progression
    (rerank against the stored chroma sequence) and localization (against the track's
    chroma) scores are non-zero, i.e. the stages that had data to work on.
    """
    import torch

    from cadenza.audio import load_audio
    from retrieval.search import search
    from retrieval.types import SearchRequest

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the web server runs queries
    stage_ms: dict[str, list[float]] = {s: [] for s in STAGES}
    routes: dict[str, int] = {}
    empty, results, progression, localized = 0, 0, 0, 0
    try:
        for p in clips[:warmup]:
            search(db=db, embedder=embedder, request=SearchRequest(audio=load_audio(path=p), k=k))
        for p in tqdm(clips, desc="query latency", leave=False):
            t0 = time.perf_counter()
            y = load_audio(path=p)
            dec = (time.perf_counter() - t0) * 1000
            resp = search(db=db, embedder=embedder, request=SearchRequest(audio=y, k=k))
            stage_ms["decode"].append(dec)
            for s in STAGES[1:]:
                stage_ms[s].append(float(resp.timings_ms.get(s, np.nan)) + (dec if s == "total" else 0.0))
            route = str(resp.query.get("ann", "none"))
            routes[route] = routes.get(route, 0) + 1
            empty += not resp.results
            results += len(resp.results)
            progression += sum(r.components.get("progression", 0.0) != 0.0 for r in resp.results)
            localized += sum(r.components.get("localization", 0.0) != 0.0 for r in resp.results)
    finally:
        torch.set_num_threads(threads)
    return {
        "stages": {s: percentiles([v for v in vals if np.isfinite(v)]) for s, vals in stage_ms.items()},
        "queries": len(clips),
        "routes": dict(sorted(routes.items())),
        "empty": empty,
        "progression_share": progression / max(results, 1),
        "localized_share": localized / max(results, 1),
    }
