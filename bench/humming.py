"""Humming benchmark: sung, whistled and played melody lines of held-out works, in other keys and tempi.

The library is the quality benchmark's kind (held-out music21 works rendered on their primary
program), ingested for real into a throw-away database, so the melodic lines searched are the
ones ingestion stores. The queries (:mod:`bench.humming_voices`) are the top line of a random
10-s passage of a library work, transposed 0 / ±3 / ±6 semitones or sung ×0.85 / ×1.15 as
fast, with pitch drift and onset jitter, voiced by a GM "voice oohs", a whistle, a recorder
or espeak-ng.

Three systems answer every query, side by side: the product's search as it runs a clip
(``route="auto"``: a single voice goes the melody route), the audio route forced
(``route="audio"``: the encoder with its ±1-semitone key probes) and a chroma baseline (the
query's 2-fps chroma sequence against every stored window's, best of 12 rotations, cosine).
A hit is the right work within ±2.5 s of the passage's start (:func:`bench.metrics.passage_hits`).
Ordinary clips of the library renders (clean and noisy, 10 s) and chord clips (several
instruments, :func:`bench.query_stages.chord_clip`) are run through the automatic route as
well, to measure what the detection costs them. :mod:`bench.humming_line` measures the
library's melodic line against the scores; :mod:`bench.humming_report` writes the tables.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.humming_voices import QUERY_S, espeak_la, hum, passage, skyline
from bench.library import SAMPLE_RATE, EvalWork, Renderer, render_library, select_works
from bench.metrics import hit_rate_at, mrr, passage_hits
from bench.report import Report, percentiles

log = logging.getLogger(__name__)

K = 10
#: (name, timbre, semitones, tempo) per condition.
CONDITIONS: tuple[tuple[str, str, int, float], ...] = (
    ("voice, same key", "voice", 0, 1.0),
    ("voice +3", "voice", 3, 1.0),
    ("voice −3", "voice", -3, 1.0),
    ("voice +6", "voice", 6, 1.0),
    ("voice −6", "voice", -6, 1.0),
    ("voice ×0.85", "voice", 0, 0.85),
    ("voice ×1.15", "voice", 0, 1.15),
    ("whistle −3", "whistle", -3, 1.0),
    ("recorder +3", "recorder", 3, 1.0),
    ("espeak-ng 'la' −3", "espeak", -3, 1.0),
)
#: The page's hum mode sends ``route="melody"``, so a hum there never depends on the single-voice test.
SYSTEMS = ("search (auto route)", "hum mode (melody route)", "audio route (encoder ±1)", "chroma baseline")


def _chroma_rows(db: Any, model_version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every window's stored 2-fps chroma sequence, flattened and unit-normed, with its track and start."""
    from retrieval.store import f16_array

    with db.connection() as conn:
        rows = conn.execute(
            "SELECT track_id, start_s, chroma_seq FROM segments WHERE model_version = %s", (model_version,)
        ).fetchall()
    seqs = [f16_array(r[2]) for r in rows]
    n = max(len(s) for s in seqs)
    mat = np.zeros((len(seqs), n, 12), np.float32)
    for i, s in enumerate(seqs):
        mat[i, : len(s)] = s
    return mat, np.array([int(r[0]) for r in rows]), np.array([float(r[1]) for r in rows])


def _chroma_search(
    query: np.ndarray, mat: np.ndarray, tracks: np.ndarray, starts: np.ndarray
) -> list[tuple[int, float]]:
    """(track, start) of the best window per track, best first: cosine of the sequences, best of 12 rotations."""
    from encoder.features import acoustic_features
    from retrieval.analysis import prepare
    from retrieval.descriptors import chroma_sequence

    q = chroma_sequence(frames=acoustic_features(y=prepare(y=query), sr=SAMPLE_RATE))[: mat.shape[1]]
    lib = mat[:, : len(q)].reshape(len(mat), -1)
    lib = lib / np.maximum(np.linalg.norm(lib, axis=1, keepdims=True), 1e-9)
    best = np.full(len(mat), -np.inf)
    for r in range(12):
        v = np.roll(q, r, axis=1).reshape(-1)
        best = np.maximum(best, lib @ (v / max(float(np.linalg.norm(v)), 1e-9)))
    out, seen = [], set()
    for i in np.argsort(-best):
        if int(tracks[i]) not in seen:
            seen.add(int(tracks[i]))
            out.append((int(tracks[i]), float(starts[i])))
        if len(out) == K:
            break
    return out


def _score(
    ranked: list[list[tuple[int, float]]], truth: list[tuple[int, float]], work_of_track: dict[int, int]
) -> dict[str, float]:
    w = np.full((len(ranked), K), -1)
    s = np.zeros((len(ranked), K))
    for i, res in enumerate(ranked):
        for j, (tid, start) in enumerate(res[:K]):
            w[i, j], s[i, j] = work_of_track.get(tid, -1), start
    hits = passage_hits(
        ranked_work=w,
        ranked_start=s,
        true_work=np.array([t[0] for t in truth]),
        true_start=np.array([t[1] for t in truth]),
    )
    work_hits = w == np.array([t[0] for t in truth])[:, None]
    return {
        "top1": hit_rate_at(hits, 1),
        "top10": hit_rate_at(hits, K),
        "mrr": mrr(hits),
        "work_top10": hit_rate_at(work_hits, K),
        "n": len(ranked),
    }


@dataclass
class _Setup:
    """What every query of the run searches against, and how to score it."""

    db: Any
    embedder: Any
    works: list[EvalWork]
    clean: dict[str, np.ndarray]
    work_of_track: dict[int, int]
    chroma: tuple[np.ndarray, np.ndarray, np.ndarray]  # (rows, tracks, starts) of the chroma baseline

    def search(self, y: np.ndarray, **kw: Any) -> Any:
        from retrieval.search import search
        from retrieval.types import SearchRequest

        return search(db=self.db, embedder=self.embedder, request=SearchRequest(audio=y, k=K, **kw))

    def search_or_none(self, y: np.ndarray, **kw: Any) -> Any:
        """``search``, or None where it refuses the query (a forced melody route on too little tune: a miss)."""
        from cadenza.errors import InputError

        try:
            return self.search(y, **kw)
        except InputError:
            return None


def _condition(
    st: _Setup, *, timbre: str, semis: int, tempo: float, lines: dict[str, Any], la: Any, n_per: int,
    rng: np.random.Generator,
) -> tuple[dict[str, list[list[tuple[int, float]]]], list[tuple[int, float]], int, list[float]]:  # fmt: skip
    """``n_per`` hummed queries of one condition through each system: (ranked per system, truth,
    how many search routed to the melody, search latencies in ms)."""
    ranked: dict[str, list[list[tuple[int, float]]]] = {s: [] for s in SYSTEMS}
    truth: list[tuple[int, float]] = []
    latency: list[float] = []
    melody_routed = 0
    tries = 0
    while len(truth) < n_per and tries < 10 * n_per:
        tries += 1
        wi = int(rng.integers(len(st.works)))
        ew = st.works[wi]
        dur = st.clean[ew.work_id].size / SAMPLE_RATE
        if dur < QUERY_S * tempo + 1.0:
            continue
        t = float(np.round(rng.uniform(0.1, dur - QUERY_S * tempo - 0.5), 2))
        notes = passage(lines[ew.work_id], t, tempo=tempo, transpose=semis, rng=rng)
        if sum(e - s for s, e, _ in notes) < 0.5 * QUERY_S:  # mostly rests: nobody hums that
            continue
        y = hum(timbre, notes, rng, la)
        truth.append((wi, t))
        t0 = time.perf_counter()
        auto = st.search(y)
        latency.append((time.perf_counter() - t0) * 1000)
        on_melody = auto.query.get("route") == "melody"
        melody_routed += on_melody
        # The automatic route already ran the melody search when it detected one voice (the same
        # deterministic path), so the hum mode only needs its own search for the hums it missed.
        forced = auto if on_melody else st.search_or_none(y, route="melody")
        audio = st.search(y, route="audio")
        ranked[SYSTEMS[0]].append([(r.track_id, r.start) for r in auto.results])
        ranked[SYSTEMS[1]].append([] if forced is None else [(r.track_id, r.start) for r in forced.results])
        ranked[SYSTEMS[2]].append([(r.track_id, r.start) for r in audio.results])
        ranked[SYSTEMS[3]].append(_chroma_search(y, *st.chroma))
    return ranked, truth, melody_routed, latency


def _ordinary_clips(st: _Setup, *, n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """The library's own renders as 10-s clips: the detection must leave them on the audio route."""
    from bench.queries import augment_clip

    ordinary: list[dict[str, Any]] = []
    for kind in ("clean", "noise"):
        truth, r_auto, r_audio, to_melody = [], [], [], 0
        for _ in range(n):
            wi = int(rng.integers(len(st.works)))
            y_full = st.clean[st.works[wi].work_id]
            t = float(np.round(rng.uniform(0.1, y_full.size / SAMPLE_RATE - QUERY_S - 0.5), 2))
            clip = y_full[int(t * SAMPLE_RATE) : int((t + QUERY_S) * SAMPLE_RATE)]
            clip = augment_clip(clip=clip, kind=kind, rng=rng)
            truth.append((wi, t))
            a = st.search(clip)
            b = st.search(clip, route="audio")
            to_melody += a.query.get("route") == "melody"
            r_auto.append([(r.track_id, r.start) for r in a.results])
            r_audio.append([(r.track_id, r.start) for r in b.results])
        ordinary.append(
            {
                "clip": kind,
                "system": SYSTEMS[0],
                "routed_to_melody": to_melody / len(truth),
                **_score(r_auto, truth, st.work_of_track),
            }
        )
        ordinary.append({"clip": kind, "system": SYSTEMS[2], **_score(r_audio, truth, st.work_of_track)})
    return ordinary


def _chord_clips(st: _Setup, *, n: int) -> dict[str, Any]:
    """Chord clips (a bass note and a triad, several instruments' worth of notes): the share the
    automatic route sends the melody route (it should be 0)."""
    from bench.query_stages import chord_clip

    routed = sum(st.search(chord_clip(seed=9000 + i)).query.get("route") == "melody" for i in range(n))
    return {"routed_to_melody": round(routed / max(n, 1), 3), "n": n}


def matcher_scaling(*, sizes: tuple[int, ...], repeats: int = 3) -> list[dict[str, Any]]:
    """Wall time of the matcher alone (:func:`retrieval.melody_match.match_lines`) for one 10-s hum
    against libraries of ``sizes`` windows (random stepwise lines; the time does not depend on them)."""
    from retrieval.melody_match import join_windows, match_lines

    rng = np.random.default_rng(5)
    out = []
    for n in sizes:
        n_tracks = max(1, n // 90)  # 3-min tracks: ~90 windows each
        frames_per = 10 * (2 * (n // n_tracks) + 8)  # windows every 2 s, 10 s long
        tracks, starts, windows = [], [], []
        for t in range(n_tracks):
            line = 60 + np.cumsum(
                rng.choice([-2, -1, 1, 2], size=frames_per) * (rng.random(frames_per) < 0.3)
            )
            for s in range(0, frames_per - 100 + 1, 20):
                tracks.append(t)
                starts.append(s / 10.0)
                windows.append(line[s : s + 100].astype(np.float32))
        lines = join_windows(tracks=np.array(tracks), starts_s=np.array(starts), windows=windows, fps=10.0)
        hum_line = windows[len(windows) // 2] + 3.0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            match_lines(query_midi=hum_line, lines=lines)
            times.append((time.perf_counter() - t0) * 1000)
        out.append(
            {
                "windows": len(windows),
                "frames": int(lines.line.size),
                "ms": float(np.median(times)),
                "n": repeats,
            }
        )
    return out


def _conditions(
    st: _Setup, *, lines: dict[str, Any], la: Any, n_per: int, rng: np.random.Generator
) -> tuple[list[dict[str, Any]], dict[str, float], list[float]]:
    """Every condition: (rows per condition and system, share routed to the melody, search latencies)."""
    per_condition: list[dict[str, Any]] = []
    routed: dict[str, float] = {}
    latency: list[float] = []
    for name, timbre, semis, tempo in tqdm(CONDITIONS, desc="humming conditions", leave=False):
        if timbre == "espeak" and la is None:
            continue
        ranked, truth, melody_routed, lat = _condition(
            st, timbre=timbre, semis=semis, tempo=tempo, lines=lines, la=la, n_per=n_per, rng=rng
        )
        latency += lat
        routed[name] = melody_routed / max(len(truth), 1)
        for sysname in SYSTEMS:
            per_condition.append(
                {"condition": name, "system": sysname, **_score(ranked[sysname], truth, st.work_of_track)}
            )
    return per_condition, routed, latency


def run_humming(
    *, out_dir: Path, quick: bool, seed: int, checkpoint: Path | None, midi_cache: Path, workdir: Path
) -> Report:
    from bench.humming_line import line_accuracy
    from bench.humming_report import write_report
    from bench.pgbench_db import ingest_folder, open_temp_database
    from bench.report import db_versions
    from encoder.embed import resolve_embedder

    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    per_composer = 1 if quick else 3
    n_per = 4 if quick else 32
    renderer = Renderer(midi_cache=midi_cache, max_seconds=45.0)
    works = select_works(per_composer=per_composer, seed=seed)
    wav_dir = workdir / "library"
    works, clean, sidecar = render_library(works, renderer=renderer, out_dir=wav_dir)
    embedder, spec = resolve_embedder(checkpoint)
    db = open_temp_database(workdir / "home")
    notes_md: list[str] = []
    data: dict[str, Any] = {"load_start": [round(x, 2) for x in os.getloadavg()]}
    try:
        with db.connection() as conn:
            pg, vec = db_versions(conn)
        rep = ingest_folder(db, wav_dir, embedder=embedder, spec=spec, metadata_file=sidecar)
        minutes = rep.audio_seconds / 60.0
        data["library"] = {
            "works": len(works), "segments": rep.segments, "audio_minutes": round(minutes, 1),
            "composers": sorted({ew.composer for ew in works}),
        }  # fmt: skip
        data["ingest_cpu_ms_per_audio_minute"] = {
            k: round(1000 * v / max(minutes, 1e-9), 1) for k, v in rep.stage_cpu_s.items()
        }
        with db.connection() as conn:
            rows = conn.execute("SELECT id, work FROM tracks").fetchall()
        index_of = {ew.work_id: i for i, ew in enumerate(works)}
        st = _Setup(
            db=db, embedder=embedder, works=works, clean=clean,
            work_of_track={int(t): index_of.get(str(w), -1) for t, w in rows},
            chroma=_chroma_rows(db, embedder.model_version),
        )  # fmt: skip
        lines = {ew.work_id: skyline(renderer, ew) for ew in works}
        data["line_accuracy"] = line_accuracy(works, clean, lines)
        la = espeak_la()
        if la is None:
            notes_md.append("espeak-ng is not installed here: its condition was skipped.")
        data["conditions"], data["routed_to_melody"], latency = _conditions(
            st, lines=lines, la=la, n_per=n_per, rng=rng
        )
        data["melody_search_ms"] = percentiles(latency)
        data["ordinary_clips"] = _ordinary_clips(st, n=n_per, rng=rng)
        data["chord_clips"] = _chord_clips(st, n=n_per)
        data["matcher_scaling"] = matcher_scaling(sizes=(500, 5_000, 20_000) if not quick else (500,))
    finally:
        db.close()
    data["load_end"] = [round(x, 2) for x in os.getloadavg()]
    report = write_report(
        data, conditions=[c[0] for c in CONDITIONS], systems=SYSTEMS, n_per=n_per,
        elapsed=time.perf_counter() - t_start, notes_md=notes_md, postgres=pg, pgvector=vec,
    )  # fmt: skip
    report.write(out_dir)
    return report
