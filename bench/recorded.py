"""``cadenza bench recorded --audio DIR``: re-finding passages in REAL recordings.

``cadenza bench quality`` measures on soundfont renders of music21 scores — the same kind of
audio the encoder was trained on. This benchmark asks the same question of real recorded,
produced music the encoder never saw: every audio file under ``--audio`` (recursively) is
the library, optionally capped in number (``max_tracks``) and length (``max_seconds`` per
track, from its start). Nothing is downloaded and no audio is copied anywhere.

Same in-memory path and systems as the quality benchmark (:mod:`bench.memsearch`,
:func:`bench.quality_systems.build_systems`): the product's leveling + features + 10-s windows every
2 s, EXACT cosine, one result per track, the start localized on the chroma. Queries are 10-s
clips at random non-grid offsets, degraded in the audio domain: the clip augmentations of
:func:`bench.queries.augment_clip` (noise, EQ, MP3, reverb) and — unlike the quality
benchmark, which re-renders the score — pitch ±1 semitone and tempo ±5 % done on the
recording itself with ``librosa.effects`` (via :mod:`encoder.augment`). Hit = right track and
``|Δt| ≤ 2.5 s`` of the passage's true start in the library.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.memsearch import Library, embed_systems, features
from bench.metrics import HIT_TOLERANCE_S
from bench.quality_systems import K, build_systems, score_passages
from bench.queries import AUGMENTATION_HELP, AUGMENTATIONS, Query, augment_clip
from bench.report import Report, machine_info, md_table, pyplot, save_plot
from cadenza.errors import InputError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
QUERY_S = 10.0
#: Audio kept on each side of a pitch/tempo cut: the phase vocoder's edge artefacts fall outside the query.
MARGIN_S = 1.0
DEFAULT_MAX_SECONDS = 120.0
DEFAULT_QUERIES = 32

HELP = {
    **AUGMENTATION_HELP,
    "clean": "the library recording itself (upper bound)",
    "pitch+1": "the recording pitch-shifted 1 semitone up (librosa.effects.pitch_shift, 16 kHz)",
    "pitch-1": "the recording pitch-shifted 1 semitone down (librosa.effects.pitch_shift, 16 kHz)",
    "tempo+5": "the recording played 5 % faster, same pitch (librosa.effects.time_stretch, rate 1.05)",
    "tempo-5": "the recording played 5 % slower, same pitch (librosa.effects.time_stretch, rate 0.95)",
}


def find_audio(root: Path) -> list[Path]:
    """Every audio file under ``root`` (recursively, by extension), in path order."""
    from cadenza.audio import AUDIO_EXTENSIONS

    root = Path(root)
    if not root.is_dir():
        raise InputError(f"--audio {root} is not a folder; point it at a folder of audio files")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def load_tracks(
    paths: list[Path], *, root: Path, max_seconds: float | None
) -> tuple[dict[str, np.ndarray], dict[str, float | None], list[str]]:
    """Decode each file (first ``max_seconds``; None = whole) → (track id → ``[n]`` float32 16 kHz,
    track id → full duration in s (None if unknown), files that could not be decoded)."""
    import soundfile as sf

    from cadenza.audio import DecodeOptions, load_audio

    audio: dict[str, np.ndarray] = {}
    full: dict[str, float | None] = {}
    failed: list[str] = []
    for p in tqdm(paths, desc="decode", leave=False):
        tid = str(p.relative_to(root))
        try:
            audio[tid] = load_audio(path=p, options=DecodeOptions(sr=SAMPLE_RATE, duration_s=max_seconds))
        except InputError as exc:
            log.warning("skipping %s: %s", p, exc)
            failed.append(tid)
            continue
        try:
            full[tid] = float(sf.info(str(p)).duration)
        except Exception:  # libsndfile cannot read it (e.g. M4A); the decoded length is a lower bound
            full[tid] = None
    return audio, full, failed


def library_time(*, stretched_s: float, rate: float) -> float:
    """Seconds into audio played ``rate`` times faster (``time_stretch(rate=rate)``, ``[n] → [n / rate]``)
    → the same moment's seconds into the original: ``stretched_s * rate``."""
    return stretched_s * rate


def _variant(kind: str) -> tuple[float, float]:
    """Augmentation name → (semitones, tempo rate)."""
    if kind.startswith("pitch"):
        return float(kind[5:]), 1.0
    if kind.startswith("tempo"):
        return 0.0, 1.0 + int(kind[5:]) / 100.0
    return 0.0, 1.0


def cut_query(
    *, y: np.ndarray, t: float, kind: str, rng: np.random.Generator, length_s: float = QUERY_S
) -> tuple[np.ndarray, float]:
    """The ``kind`` query of ``length_s`` s whose library passage starts near ``t`` s into ``y [n]``
    → (clip ``[length_s · 16000]`` float32, the passage's exact start in ``y`` in seconds)."""
    from encoder import augment

    semitones, rate = _variant(kind)
    n = int(round(length_s * SAMPLE_RATE))
    if semitones == 0.0 and rate == 1.0:
        i0 = int(round(t * SAMPLE_RATE))
        return augment_clip(clip=y[i0 : i0 + n].astype(np.float32), kind=kind, rng=rng), i0 / SAMPLE_RATE
    # Transform only the stretch around the passage (a whole track would cost seconds per query).
    s0 = max(0, int(round((t - MARGIN_S) * SAMPLE_RATE)))
    s1 = int(round((t + length_s * rate + MARGIN_S) * SAMPLE_RATE))
    seg = y[s0:s1].astype(np.float32)
    if semitones:
        seg, r = augment.pitch_shift(y=seg, semitones=semitones), 1.0
    else:
        seg, r = augment.time_stretch(y=seg, rate=rate), rate
    i0 = int(round((t - s0 / SAMPLE_RATE) / r * SAMPLE_RATE))  # where the passage now starts in seg
    start = s0 / SAMPLE_RATE + library_time(stretched_s=i0 / SAMPLE_RATE, rate=r)
    return seg[i0 : i0 + n], start


def make_recorded_queries(
    *, tracks: list[np.ndarray], kind: str, n: int, rng: np.random.Generator, length_s: float = QUERY_S
) -> list[Query]:
    """``n`` ``kind`` queries, each from a random track (long enough) at a random non-grid offset."""
    _, rate = _variant(kind)
    span = length_s * max(rate, 1.0) + 0.5  # library seconds a query needs after its start
    ok = [i for i, y in enumerate(tracks) if y.size / SAMPLE_RATE - span > 0.2]
    out: list[Query] = []
    if not ok:
        return out
    for _ in range(n):
        wi = ok[int(rng.integers(len(ok)))]
        hi = tracks[wi].size / SAMPLE_RATE - span
        t = float(np.round(rng.uniform(0.1, hi), 2))  # seconds, not on the 2-s window grid
        clip, start = cut_query(y=tracks[wi], t=t, kind=kind, rng=rng, length_s=length_s)
        out.append(Query(work_index=wi, start_s=start, length_s=length_s, kind=kind, audio=clip))
    return out


def _library(
    audio_dir: Path, *, max_tracks: int | None, max_seconds: float | None, timings: dict[str, Any]
) -> tuple[dict[str, np.ndarray], Library, dict[str, Any]]:
    """Decode the recordings under ``audio_dir`` and cut them in windows; (audio per track, library, its description)."""
    paths = find_audio(audio_dir)
    found = len(paths)
    if max_tracks:
        paths = paths[:max_tracks]
    if not paths:
        raise InputError(f"no audio files under {audio_dir}; use a folder of MP3/WAV/FLAC/OGG/M4A files")
    t0 = time.perf_counter()
    tracks, full_s, failed = load_tracks(paths, root=audio_dir, max_seconds=max_seconds)
    if not tracks:
        raise InputError(f"none of the {len(paths)} audio files under {audio_dir} could be decoded")
    timings["decode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = {tid: features(y=y) for tid, y in tqdm(tracks.items(), desc="library features", leave=False)}
    timings["features_s"] = time.perf_counter() - t0
    lib = Library.build(frames)
    used_min = sum(y.size for y in tracks.values()) / SAMPLE_RATE / 60
    known = [v for v in full_s.values() if v is not None]
    lib_info: dict[str, Any] = {
        "folder": str(audio_dir.resolve()),
        "files_found": found,
        "tracks": len(tracks),
        "failed_to_decode": failed,
        "segments": lib.n_segments,
        "audio_minutes_used": round(used_min, 1),
        "audio_minutes_full": round(sum(known) / 60, 1) if len(known) == len(tracks) else None,
        "max_seconds_per_track": max_seconds,
        "track_seconds": {tid: round(y.size / SAMPLE_RATE, 1) for tid, y in tracks.items()},
    }
    log.info("recorded library: %d tracks, %.1f min, %d segments", len(tracks), used_min, lib.n_segments)
    return tracks, lib, lib_info


def _notes(
    lib_info: dict[str, Any], *, max_tracks: int | None, n_queries: int, seed: int, timings: dict[str, Any]
) -> list[str]:
    n_tracks, found, max_seconds = (
        lib_info["tracks"],
        lib_info["files_found"],
        lib_info["max_seconds_per_track"],
    )
    full = (
        f", {lib_info['audio_minutes_full']} min in full"
        if lib_info["audio_minutes_full"] is not None
        else ""
    )
    cap = f"the first {max_seconds:.0f} s of each" if max_seconds else "whole tracks"
    # The files looked at: the first max_tracks of those found.
    n_paths = min(found, max_tracks) if max_tracks else found
    failed = lib_info["failed_to_decode"]
    return [
        f"Library: every audio file under `{lib_info['folder']}` — {n_tracks} tracks"
        + (f" (first {max_tracks} of {found} files in path order)" if max_tracks and found > n_paths else "")
        + f"{full}; {cap} used: {lib_info['audio_minutes_used']} min, {lib_info['segments']} segments of 10 s every 2 s."
        + (f" {len(failed)} file(s) could not be decoded and were skipped." if failed else ""),
        "This is REAL recorded (produced, mixed, mastered) music, unlike the training corpus (soundfont renders "
        "of music21 scores): the encoder never saw audio like it. Nothing here is rendered.",
        "In-memory path (all systems): the product's leveling + features + 10-s/2-s windows, EXACT cosine over all "
        "segments, one result per track, start localized on the chroma (retrieval.localize) like search does; "
        "no reranker.",
        f"Queries: {n_queries} 10-s clips per augmentation from random tracks at random (non-grid) offsets; "
        f"hit = right track and |Δt| ≤ {HIT_TOLERANCE_S} s of the passage's true start (for tempo, the library "
        "time of the stretched clip's first sample). Music that repeats itself (loops, reprises) can be found "
        "at another repetition: that is a miss here but counts in 'right track (any time)'.",
        f"Seed {seed}; run took {timings['total_s'] / 60:.1f} min (decode {timings['decode_s']:.0f} s, library features "
        f"{timings['features_s']:.0f} s, embedding {sum(timings['embed_library_s'].values()):.0f} s, "
        f"queries {timings['queries_s']:.0f} s).",
    ]


def run_recorded(
    *,
    audio_dir: Path,
    out_dir: Path,
    seed: int = 0,
    checkpoint: Path | None = None,
    max_tracks: int | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    n_queries: int = DEFAULT_QUERIES,
    augmentations: tuple[str, ...] = AUGMENTATIONS,
) -> Report:
    """Run the benchmark on the audio under ``audio_dir``; writes ``recorded.json`` / ``.md`` / PNG
    into ``out_dir``. ``max_seconds`` None or ≤ 0 = whole tracks."""
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    audio_dir = Path(audio_dir)
    max_seconds = max_seconds if max_seconds and max_seconds > 0 else None
    notes: list[str] = []
    timings: dict[str, Any] = {}
    tracks, lib, lib_info = _library(
        audio_dir, max_tracks=max_tracks, max_seconds=max_seconds, timings=timings
    )

    systems = build_systems(checkpoint, lib, notes)
    timings["embed_library_s"] = embed_systems(lib, systems)

    t0 = time.perf_counter()
    audio = list(tracks.values())
    rows: list[dict[str, Any]] = []
    for kind in tqdm(augmentations, desc="queries", leave=False):
        qs = make_recorded_queries(tracks=audio, kind=kind, n=n_queries, rng=rng)
        if not qs:
            continue
        qf = [features(y=q.audio) for q in qs]
        for name, emb in systems.items():
            rows.append({"augmentation": kind, "system": name, **score_passages(lib, name, emb, qs, qf)})
    timings["queries_s"] = time.perf_counter() - t0
    elapsed = time.perf_counter() - t_start
    timings["total_s"] = elapsed

    report = Report(
        name="recorded",
        title="Recorded: re-finding passages in real recordings",
        machine=machine_info(),
    )
    report.data = {
        "library": lib_info,
        "sizes": {"queries_per_augmentation": n_queries, "query_s": QUERY_S, "k": K},
        "passage": rows,
        "timings": timings,
        "seconds": elapsed,
    }
    report.notes += [
        *_notes(lib_info, max_tracks=max_tracks, n_queries=n_queries, seed=seed, timings=timings),
        *notes,
    ]
    if len(tracks) <= K:
        report.notes.append(
            f"Only {len(tracks)} tracks (≤ k = {K}): every track is in every top-{K}, so 'right track' top-{K} "
            "is 1 by construction and passage top-10 only measures localization; use more tracks."
        )
    _sections(report, rows)
    if rows:
        report.plots.append(_plot(rows, out_dir))
    report.write(out_dir)
    return report


def _mean_rows(rows: list[dict[str, Any]], systems: list[str], metrics: tuple[str, ...]) -> list[list[Any]]:
    out = []
    for label, keep in (("mean (all)", lambda a: True), ("mean (clean excluded)", lambda a: a != "clean")):
        row: list[Any] = [label]
        for s in systems:
            rs = [r for r in rows if r["system"] == s and keep(r["augmentation"])]
            row += [float(np.mean([r[m] for r in rs])) if rs else None for m in metrics]
        out.append(row)
    return out


def _sections(report: Report, rows: list[dict[str, Any]]) -> None:
    systems = list(dict.fromkeys(r["system"] for r in rows))
    kinds = list(dict.fromkeys(r["augmentation"] for r in rows))
    for heading, metrics, names in (
        (
            "Passage re-finding, 10-s queries (in-memory exact search)",
            ("top1", "top10", "mrr"),
            ("top-1", "top-10", "MRR"),
        ),
        (
            "Right track at any time (the passage may be found at another repetition)",
            ("work_top1", "work_top10"),
            ("top-1", "top-10"),
        ),
    ):
        table = []
        for kind in kinds:
            cells = {r["system"]: r for r in rows if r["augmentation"] == kind}
            row: list[Any] = [kind, next(iter(cells.values()))["n"]]
            for s in systems:
                row += [cells.get(s, {}).get(m) for m in metrics]
            table.append(row)
        table += [[r[0], None, *r[1:]] for r in _mean_rows(rows, systems, metrics)]
        headers = ["augmentation", "n"] + [f"{s} {m}" for s in systems for m in names]
        report.section(heading, md_table(headers, table))
    report.section("Augmentations", md_table(["name", "what"], [(k, HELP[k]) for k in kinds]))


def _plot(rows: list[dict[str, Any]], out_dir: Path) -> str:
    plt = pyplot()
    systems = list(dict.fromkeys(r["system"] for r in rows))
    kinds = list(dict.fromkeys(r["augmentation"] for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(kinds))
    width = 0.8 / max(len(systems), 1)
    for j, s in enumerate(systems):
        vals = [
            next((r["top10"] for r in rows if r["system"] == s and r["augmentation"] == k), np.nan)
            for k in kinds
        ]
        ax.bar(x + j * width - 0.4 + width / 2, vals, width, label=s)
    ax.set_xticks(x)
    ax.set_xticklabels(kinds, rotation=45, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("top-10 hit rate")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Real recordings: 10-s passage re-finding (right track, |Δt| ≤ 2.5 s)")
    return str(save_plot(fig, out_dir / "recorded_per_augmentation.png"))
