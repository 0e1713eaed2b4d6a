"""Humming benchmark: sung, whistled and played melody lines of held-out works, in other keys and tempi.

The library is the quality benchmark's kind (held-out music21 works rendered on their primary
program), ingested for real into a throw-away database, so the melodic lines searched are the
ones ingestion stores. Each query is the top line (skyline) of a random 10-s passage of a
library work, changed as a person humming would change it — transposed 0 / ±3 / ±6 semitones,
sung ×0.85 or ×1.15 as fast, with pitch drifting up to ±30 cents over the clip and each note
onset off by ~40 ms — and voiced by one of:

* ``voice``: General MIDI "voice oohs" (program 53, the soundfont in ``pretty_midi``);
* ``whistle``: a sine an octave up with 5.5-Hz vibrato and breath noise;
* ``recorder``: General MIDI recorder (program 74);
* ``espeak``: espeak-ng singing "la" — one syllable synthesized once, pitch-shifted to each
  note by resampling (espeak-ng cannot sing a given pitch itself), where espeak-ng is installed.

Three systems answer every query, side by side: the product's search as it runs a clip
(``route="auto"``: a single voice goes the melody route), the audio route forced
(``route="audio"``: the encoder with its ±1-semitone key probes) and a chroma baseline (the
query's 2-fps chroma sequence against every stored window's, best of 12 rotations, cosine).
A hit is the right work within ±2.5 s of the passage's start (:func:`bench.metrics.passage_hits`).
Ordinary clips of the library renders (clean and noisy, 10 s) are run through both routes as
well, to measure what the automatic detection costs them.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.library import SAMPLE_RATE, EvalWork, Renderer, render_library, select_works
from bench.metrics import hit_rate_at, mrr, passage_hits
from bench.report import Report, machine_info, md_table, percentiles

log = logging.getLogger(__name__)

K = 10
QUERY_S = 10.0
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
DRIFT_CENTS = 30.0
JITTER_S = 0.04
SYSTEMS = ("search (auto route)", "audio route (encoder ±1)", "chroma baseline")


def skyline(renderer: Renderer, ew: EvalWork) -> list[tuple[float, float, int]]:
    """The work's top line as ``(start, end, midi)`` on its clean timeline (encoder.render's skyline)."""
    from encoder.render import _melody_notes

    pm = renderer.midi(ew)
    notes = [
        (n.start, n.end, n.pitch, n.velocity)
        for inst in pm.instruments
        if not inst.is_drum
        for n in inst.notes
    ]  # type: ignore[attr-defined]
    return [(float(s), float(e), int(p)) for s, e, p, _ in _melody_notes(notes)]


def _passage(
    notes: list[tuple[float, float, int]], t: float, *, tempo: float, transpose: int, rng: np.random.Generator
):
    """The notes sounding in ``[t, t + QUERY_S × tempo)`` of the clean timeline, moved to the query's time,
    key and tempo, each onset jittered."""
    out = []
    span = QUERY_S * tempo
    for s, e, p in notes:
        if e <= t or s >= t + span:
            continue
        s2, e2 = (max(s, t) - t) / tempo, (min(e, t + span) - t) / tempo
        j = float(rng.normal(0.0, JITTER_S))
        s2 = max(0.0, s2 + j)
        if e2 - s2 > 0.06:
            out.append((s2, e2, p + transpose))
    return out


def _drift(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pitch drifting linearly from −d to +d cents (d ≤ DRIFT_CENTS, random sign) by variable-rate resampling."""
    d = float(rng.uniform(0.5, 1.0)) * DRIFT_CENTS * float(rng.choice([-1.0, 1.0]))
    cents = np.linspace(-d, d, y.size)
    pos = np.cumsum(2.0 ** (cents / 1200.0))
    pos = pos[pos < y.size - 1]
    return np.interp(pos, np.arange(y.size), y).astype(np.float32)


def _gm(notes: list[tuple[float, float, int]], program: int) -> np.ndarray:
    import pretty_midi

    from encoder.render import render

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program)
    inst.notes = [pretty_midi.Note(velocity=90, pitch=int(p), start=s, end=e) for s, e, p in notes]
    pm.instruments.append(inst)
    return render(midi=pm, program=program)


def _whistle(notes: list[tuple[float, float, int]], rng: np.random.Generator) -> np.ndarray:
    end = max(e for _, e, _ in notes) + 0.3
    y = np.zeros(int(end * SAMPLE_RATE), np.float32)
    for s, e, p in notes:
        a, b = int(s * SAMPLE_RATE), int(e * SAMPLE_RATE)
        t = np.arange(b - a) / SAMPLE_RATE
        f = 440.0 * 2.0 ** ((p + 12 - 69) / 12.0) * 2.0 ** (20.0 / 1200 * np.sin(2 * np.pi * 5.5 * t))
        env = np.minimum(1.0, np.minimum(t / 0.04, (t[-1] - t) / 0.04 + 1e-3))
        y[a:b] += 0.3 * np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) * env
    return y + (0.004 * rng.standard_normal(y.size)).astype(np.float32)


@dataclass(frozen=True)
class Syllable:
    """One sung syllable from espeak-ng, cut into pitch periods so it can be re-pitched."""

    y: np.ndarray  # [n] float32, 16 kHz
    marks: np.ndarray  # [M] sample index of each pitch period's peak
    periods: np.ndarray  # [M] that period's length (samples)


def _espeak_la() -> Syllable | None:
    """One long "laa" from espeak-ng at 16 kHz, with its pitch marks; None without espeak-ng.

    espeak-ng speaks: its "laa" glides down about four semitones, and it cannot be told a pitch
    in Hz. So the syllable is re-pitched note by note with TD-PSOLA (:func:`_espeak`), which
    keeps its formants (a vowel, not a chipmunk) and holds each note's pitch flat.
    """
    import io
    import subprocess

    import soundfile as sf

    from cadenza.audio import resample
    from encoder.features import HOP
    from encoder.pitch import track_pitch

    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    try:
        wav = subprocess.run(
            [exe, "--stdout", "-s", "80", "-p", "60", "laaa"], capture_output=True, timeout=30, check=True
        ).stdout
        y, sr = sf.read(io.BytesIO(wav), dtype="float32")
    except (subprocess.SubprocessError, OSError, RuntimeError):
        return None
    y = resample(y=y if y.ndim == 1 else y.mean(1), orig_sr=sr, sr=SAMPLE_RATE)
    nz = np.nonzero(np.abs(y) > 0.01 * np.abs(y).max())[0]
    y = y[nz[0] : nz[-1]] if nz.size else y
    midi = track_pitch(y=y).midi.astype(np.float64)
    ok = np.isfinite(midi)
    if ok.sum() < 3:
        return None
    # The source period at every sample (from the 10-fps track), then one mark per period on its peak.
    t_frames = np.arange(midi.size) * HOP
    period = SAMPLE_RATE / (
        440.0 * 2.0 ** ((np.interp(np.arange(y.size), t_frames[ok], midi[ok]) - 69.0) / 12.0)
    )
    marks, m = [], int(np.argmax(np.abs(y[: int(period[0])])))
    while m < y.size - 1:
        marks.append(m)
        p = int(period[m])
        lo, hi = m + int(0.8 * p), min(m + int(1.2 * p), y.size - 1)
        if lo >= hi:
            break
        m = lo + int(np.argmax(y[lo:hi]))
    mk = np.asarray(marks)
    return Syllable(y=y, marks=mk, periods=period[mk].astype(np.int64))


def _espeak(notes: list[tuple[float, float, int]], la: Syllable) -> np.ndarray:
    """TD-PSOLA: for each note, two-period grains of the syllable (stretched over the note) placed one
    target period apart, so the result sings the note's pitch with the syllable's vowel."""
    end = max(e for _, e, _ in notes) + 0.3
    y = np.zeros(int(end * SAMPLE_RATE) + 4096, np.float32)
    for s, e, p in notes:
        a, n = int(s * SAMPLE_RATE), int((e - s) * SAMPLE_RATE)
        step = SAMPLE_RATE / (440.0 * 2.0 ** ((p - 69) / 12.0))  # target period (samples)
        for tau in np.arange(0.0, n, step):
            j = min(int(tau / max(n, 1) * la.marks.size), la.marks.size - 1)  # the syllable, stretched
            m, per = int(la.marks[j]), int(la.periods[j])
            lo, hi = max(m - per, 0), min(m + per, la.y.size)
            grain = la.y[lo:hi] * np.hanning(hi - lo).astype(np.float32)
            env = min(1.0, tau / 400.0, (n - tau) / 400.0 + 1e-3)
            at = a + int(tau) - (m - lo)
            if at >= 0:
                y[at : at + grain.size] += env * grain
    return y[: int(end * SAMPLE_RATE)]


def _truth_frames(notes: list[tuple[float, float, int]], n: int) -> np.ndarray:
    """The score's top line at the contour frames (10 fps, frame t at t / 10 s), NaN in rests."""
    from retrieval.melody import MELODY_FPS

    t = np.arange(n) / MELODY_FPS
    out = np.full(n, np.nan)
    for s, e, p in notes:
        out[(t >= s) & (t < e)] = p
    return out


#: The library line's settings before this benchmark's tuning (compression, harmonic decay).
PREVIOUS_LINE = (1.0 / 3.0, 0.8)


def line_accuracy(
    works: list[EvalWork], clean: dict[str, np.ndarray], lines: dict[str, list[tuple[float, float, int]]]
) -> dict[str, Any]:
    """Share of the score's top-line frames where the library's melodic line has its pitch class (±½
    semitone, any octave), for the line ingest stores now and the previous one; CPU ms per audio minute."""
    from retrieval.analysis import prepare
    from retrieval.melody import melody_contour, melody_voices

    hits = {"now": 0.0, "previous": 0.0}
    cpu = {"now": 0.0, "previous": 0.0}
    by_composer: dict[str, list[float]] = {}
    total, seconds = 0, 0.0
    warm = np.zeros(SAMPLE_RATE, np.float32)  # build both salience matrices before timing
    melody_contour(y=warm)
    melody_voices(y=warm, voices=1, compression=PREVIOUS_LINE[0], decay=PREVIOUS_LINE[1])
    for ew in works:
        y = prepare(y=clean[ew.work_id])
        seconds += y.size / SAMPLE_RATE
        t0 = time.process_time()
        now = melody_contour(y=y)
        t1 = time.process_time()
        prev = melody_voices(y=y, voices=1, compression=PREVIOUS_LINE[0], decay=PREVIOUS_LINE[1])[0]
        t2 = time.process_time()
        cpu["now"] += t1 - t0
        cpu["previous"] += t2 - t1
        truth = _truth_frames(lines[ew.work_id], now.size)
        ok = np.isfinite(truth)
        total += int(ok.sum())
        for name, c in (("now", now), ("previous", prev)):
            good = np.abs((c[ok] - truth[ok] + 6.0) % 12.0 - 6.0) <= 0.5  # NaN compares False
            hits[name] += float(good.sum())
            by_composer.setdefault(f"{ew.composer} {name}", []).append(
                float(good.mean()) if ok.any() else 0.0
            )
    return {
        "frames": total,
        "now": round(hits["now"] / max(total, 1), 3),
        "previous": round(hits["previous"] / max(total, 1), 3),
        "cpu_ms_per_audio_minute": {k: round(1000 * v / max(seconds / 60, 1e-9), 1) for k, v in cpu.items()},
        "by_composer": {k: round(float(np.mean(v)), 2) for k, v in sorted(by_composer.items())},
    }


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


def _hum(
    timbre: str,
    notes: list[tuple[float, float, int]],
    rng: np.random.Generator,
    la: Syllable | None,
) -> np.ndarray:
    """The passage ``notes`` sung, played or whistled in ``timbre``, with a little pitch drift."""
    if timbre == "voice":
        y = _gm(notes, 53)
    elif timbre == "recorder":
        y = _gm(notes, 74)
    elif timbre == "whistle":
        y = _whistle(notes, rng)
    else:
        assert la is not None
        y = _espeak(notes, la)
    return _drift(y, rng)


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
        notes = _passage(lines[ew.work_id], t, tempo=tempo, transpose=semis, rng=rng)
        if sum(e - s for s, e, _ in notes) < 0.5 * QUERY_S:  # mostly rests: nobody hums that
            continue
        y = _hum(timbre, notes, rng, la)
        truth.append((wi, t))
        t0 = time.perf_counter()
        auto = st.search(y)
        latency.append((time.perf_counter() - t0) * 1000)
        melody_routed += auto.query.get("route") == "melody"
        audio = st.search(y, route="audio")
        ranked[SYSTEMS[0]].append([(r.track_id, r.start) for r in auto.results])
        ranked[SYSTEMS[1]].append([(r.track_id, r.start) for r in audio.results])
        ranked[SYSTEMS[2]].append(_chroma_search(y, *st.chroma))
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
        ordinary.append({"clip": kind, "system": SYSTEMS[1], **_score(r_audio, truth, st.work_of_track)})
    return ordinary


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


def _report(
    data: dict[str, Any], *, n_per: int, elapsed: float, notes_md: list[str], postgres: str, pgvector: str
) -> Report:
    report = Report(
        name="humming",
        title="Humming: melody lines in other keys and tempi",
        machine=machine_info(postgres=postgres, pgvector=pgvector),
    )
    report.data = data
    report.notes += [
        f"Library: {data['library']['works']} held-out works ({data['library']['audio_minutes']} min, "
        f"{data['library']['segments']} windows), rendered on their primary program and ingested for real.",
        f"{n_per} queries per condition, {QUERY_S:.0f} s each; drift up to ±{DRIFT_CENTS:.0f} cents, onset jitter "
        f"σ {JITTER_S * 1000:.0f} ms. A hit: right work, start within ±2.5 s. Wall time "
        f"{elapsed / 60:.1f} min on a shared machine (load average is in Machine).",
        *notes_md,
    ]
    routed = data["routed_to_melody"]
    table: list[list[Any]] = []
    for name, *_ in CONDITIONS:
        cells = [r for r in data["conditions"] if r["condition"] == name]
        if not cells:
            continue
        by = {r["system"]: r for r in cells}
        table.append(
            [name, cells[0]["n"], f"{routed[name]:.2f}"]
            + [f"{by[s]['top1']:.2f} / {by[s]['top10']:.2f} / {by[s]['mrr']:.2f}" for s in SYSTEMS]
            + [f"{by[SYSTEMS[0]]['work_top10']:.2f}"]
        )
    report.section(
        "Per condition: top-1 / top-10 / MRR (passage: right work, ±2.5 s)",
        md_table(
            ["condition", "n", "routed to melody", *SYSTEMS, "search: right work anywhere, top-10"], table
        ),
    )
    table = []
    for r in data["ordinary_clips"]:
        table.append(
            [
                r["clip"],
                r["system"],
                r.get("routed_to_melody", "–"),
                f"{r['top1']:.2f}",
                f"{r['top10']:.2f}",
                r["n"],
            ]
        )
    report.section(
        "Ordinary clips (the library's own renders, 10 s): no regression",
        md_table(["clip", "system", "routed to melody", "top-1", "top-10", "n"], table),
    )
    acc = data["line_accuracy"]
    comps = sorted({k.rsplit(" ", 1)[0] for k in acc["by_composer"]})
    report.section(
        "The library's melodic line against the scores' top line (share of frames with its pitch class)",
        md_table(
            ["works", "previous line (cube root, decay 0.8)", "line stored now (square root, decay 0.9)"],
            [["all (" + str(acc["frames"]) + " frames)", acc["previous"], acc["now"]]]
            + [[c, acc["by_composer"][f"{c} previous"], acc["by_composer"][f"{c} now"]] for c in comps],
        ),
    )
    cost = data["ingest_cpu_ms_per_audio_minute"]
    report.section(
        "Cost",
        md_table(["what", "measured"], [
            ["melodic line at ingest (CPU ms per minute of audio)", cost.get("melody", "–")],
            ["for scale: features (CPU ms per minute)", cost.get("features", "–")],
            ["melodic line alone, timed here (CPU ms per minute, now / previous)",
             f"{acc['cpu_ms_per_audio_minute']['now']} / {acc['cpu_ms_per_audio_minute']['previous']}"],
            ["search as it runs a hum (ms, p50 / p95)", f"{data['melody_search_ms'].get('p50', 0):.0f} / {data['melody_search_ms'].get('p95', 0):.0f}"],
        ]),
    )  # fmt: skip
    return report


def run_humming(
    *, out_dir: Path, quick: bool, seed: int, checkpoint: Path | None, midi_cache: Path, workdir: Path
) -> Report:
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
    data: dict[str, Any] = {}
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
        la = _espeak_la()
        if la is None:
            notes_md.append("espeak-ng is not installed here: its condition was skipped.")
        data["conditions"], data["routed_to_melody"], latency = _conditions(
            st, lines=lines, la=la, n_per=n_per, rng=rng
        )
        data["melody_search_ms"] = percentiles(latency)
        data["ordinary_clips"] = _ordinary_clips(st, n=n_per, rng=rng)
    finally:
        db.close()
    report = _report(
        data, n_per=n_per, elapsed=time.perf_counter() - t_start, notes_md=notes_md, postgres=pg, pgvector=vec
    )
    report.write(out_dir)
    return report
