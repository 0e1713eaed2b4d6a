"""``cadenza bench likeness --audio DIR``: does search find *other* music that sounds alike?

Real recordings only, one folder per source (``scripts/fetch_real_music.sh DIR``; see
:mod:`bench.real_sources`). Only the sources held out of training whole
(:data:`encoder.corpus_real.HELDOUT_SOURCES`) are measured: the other sources are in the
training corpus of encoders built with ``cadenza corpus build --real``. Three questions, with
the compared systems side by side in one run (``--candidate DIR`` adds a second checkpoint):

(a) **Same-source P@10**: two 10-s queries per track (a third and two thirds in); of the top
    10 *other* tracks (one result per track, the query's own track left out), the share from
    the query's source. Chance = (tracks of the source − 1) / (tracks − 1); ceiling = min(10,
    tracks of the source − 1) / 10. Measured in memory (exact cosine over 10-s windows every
    2 s, no reranker) for every system, and through the product (``retrieval.ingest`` into a
    temporary PostgreSQL, ``retrieval.search`` with the clip as the query and k = 11, the own
    track dropped afterwards so its identical hit is present as for a listener) at the default
    diversity, at diversity 0 and with one aspect of likeness at a time. Also the share of the
    query composer's *other* tracks (composer = the file's artist/composer tag, else the source)
    against its chance share.
(b) **Cross-stem**: a 10-s clip of one Fret-on-Fire stem alone (guitar, or backing) must find
    the same passage (|Δt| ≤ 2.5 s) in the song's full mix (guitar + backing) in the library.
(c) **Passage re-finding per distortion**, including a phone line, reverb and 5-s clips.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.likeness_report import likeness_report
from bench.memsearch import Library, SoundEmbedder, embed_systems, features, query_embeddings
from bench.quality_systems import build_systems, score_passages
from bench.queries import Query
from bench.real_sources import SAMPLE_RATE, Sources, load_sources
from bench.recorded import make_recorded_queries
from bench.report import Report
from encoder.corpus_real import HELDOUT_SOURCES
from encoder.features import MEL
from retrieval.clip_query import SILENCE_DBFS

log = logging.getLogger(__name__)

K = 10
QUERY_S = 10.0
DEFAULT_MAX_SECONDS = 120.0
DEFAULT_QUERIES = 40
TIMBRE = "timbre (fitted)"
SOUND = "cadenza + timbre"
STEM_QUERIES_PER_STEM = 4
#: (label, augmentation, clip seconds) of the re-finding cells.
DISTORTIONS = (
    ("clean", "clean", 10.0),
    ("noise", "noise", 10.0),
    ("mp3", "mp3", 10.0),
    ("reverb", "reverb", 10.0),
    ("phone", "phone", 10.0),
    ("5-s clip", "clean", 5.0),
    ("3-s clip", "clean", 3.0),
)
#: The (c) columns besides strict top-1: the right track first at any time, and literal repeats counted.
REFIND_EXTRA = ("work_top1", "top1_rep")
ASPECT_ONLY = {
    "sound": {"harmony": 0.0, "rhythm": 0.0, "melody": 0.0},
    "harmony": {"sound": 0.0, "rhythm": 0.0, "melody": 0.0},
    "rhythm": {"sound": 0.0, "harmony": 0.0, "melody": 0.0},
    "melody": {"sound": 0.0, "harmony": 0.0, "rhythm": 0.0},
}


@dataclass
class SourceQuery:
    track: int  # index into Sources.tracks (= the in-memory library's track order)
    start_s: float
    audio: np.ndarray


def source_queries(src: Sources, *, per_track: int = 2) -> list[SourceQuery]:
    out = []
    n = int(QUERY_S * SAMPLE_RATE)
    for i, t in enumerate(src.tracks):
        for j in range(per_track):
            start = (t.audio.size - n) * (j + 1) / (per_track + 1) / SAMPLE_RATE
            i0 = int(round(start * SAMPLE_RATE))
            out.append(SourceQuery(i, round(i0 / SAMPLE_RATE, 2), t.audio[i0 : i0 + n]))
    return out


def chance_and_ceiling(src: Sources, queries: list[SourceQuery]) -> dict[str, float]:
    counts = src.counts()
    n = len(src.tracks)
    same = np.array([counts[src.tracks[q.track].source] - 1 for q in queries], dtype=np.float64)
    artists = [t.artist.lower() for t in src.tracks]
    same_artist = np.array([artists.count(artists[q.track]) - 1 for q in queries], dtype=np.float64)
    return {
        "chance": float(np.mean(same / (n - 1))),
        "ceiling": float(np.mean(np.minimum(K, same) / K)),
        "composer_chance": float(np.mean(same_artist / (n - 1))),
    }


def same_source_memory(
    lib: Library,
    name: str,
    embedder: Any,
    src: Sources,
    queries: list[SourceQuery],
    qframes: list[np.ndarray],
) -> float:
    emb, pen = query_embeddings(embedder, qframes)
    precs = []
    for i, q in enumerate(queries):
        tracks, _, _ = lib.search(name, query=emb[i], k=K, exclude_track=q.track, penalties=pen)
        own = src.tracks[q.track].source
        precs.append(sum(src.tracks[t].source == own for t in tracks if t >= 0) / K)
    return float(np.mean(precs))


#: What each in-memory system measures, for the table (the product rows say it in their path).
ASPECT_OF = {
    "mfcc+chroma stats": "baseline: MFCC + chroma statistics",
    "cadenza": "sound: learned embedding alone",
    "cadenza+key probes": "sound: learned embedding alone (key probes)",
    "cadenza v2": "sound: learned embedding alone (v2)",
    "cadenza v2+key probes": "sound: learned embedding alone (v2, key probes)",
    TIMBRE: "sound: timbre/production vector alone",
    SOUND: "sound: embedding + timbre at the fitted weight",
}


def add_sound_systems(systems: dict[str, Any], notes: list[str]) -> None:
    """The shipped timbre model alone and, with the shipped encoder, the rerank's sound aspect (in memory)."""
    from encoder.timbre import DEFAULT_TIMBRE_DIR, shipped_timbre

    timbre = shipped_timbre()
    systems[TIMBRE] = timbre
    if "cadenza" in systems:
        systems[SOUND] = SoundEmbedder(base=systems["cadenza"], timbre=timbre, weight=timbre.weight)
    notes.append(
        f"{TIMBRE} = timbre model {timbre.version} ({timbre.dim} dims, fitted on training sources only; "
        f"{DEFAULT_TIMBRE_DIR.relative_to(DEFAULT_TIMBRE_DIR.parents[2])}/timbre.json); {SOUND} = embedding cosine + {timbre.weight:g} × "
        "(1 + timbre cosine) / 2, the rerank's window sound terms at the fitted weight. The product rows "
        f"add the track-sound term (the query window against the mean timbre of a candidate's whole "
        f"track) at its fitted weight {timbre.track_weight:g}."
    )


def stem_queries(src: Sources, rng: np.random.Generator) -> list[Query]:
    """Clips of each stem alone; ``work_index`` is the library index of the song's full mix."""
    out = []
    n = int(QUERY_S * SAMPLE_RATE)
    for guitar, backing, mix in src.stems.values():
        for kind, y in (("guitar", guitar), ("backing", backing)):
            for _ in range(STEM_QUERIES_PER_STEM):
                t = float(np.round(rng.uniform(5.0, max(5.5, y.size / SAMPLE_RATE - QUERY_S - 1)), 2))
                i0 = int(round(t * SAMPLE_RATE))
                out.append(Query(work_index=mix, start_s=i0 / SAMPLE_RATE, length_s=QUERY_S, kind=kind,
                                 audio=y[i0 : i0 + n].astype(np.float32)))  # fmt: skip
    return out


def _library(
    audio_dir: Path, *, max_seconds: float | None, sources: tuple[str, ...], checkpoint: Path | None,
    candidate: Path | None, notes: list[str], timings: dict[str, Any],
) -> tuple[Sources, Library, dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Decode the sources, cut and embed them for every system; (sources, library, systems, its description)."""
    t0 = time.perf_counter()
    src = load_sources(audio_dir, max_seconds=max_seconds, only=sources)
    timings["decode_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames = {
        t.name: features(y=t.audio)
        for t in tqdm(src.tracks, desc="library features", leave=False, mininterval=30)
    }
    timings["features_s"] = time.perf_counter() - t0
    lib = Library.build(frames)
    systems = build_systems(checkpoint, lib, notes, candidate)
    systems.pop("untrained", None)  # a sanity floor for the quality benchmark; not asked here
    add_sound_systems(systems, notes)
    timings["embed_library_s"] = embed_systems(lib, systems)
    minutes = sum(t.audio.size for t in src.tracks) / SAMPLE_RATE / 60
    lib_info = {
        "sources": src.counts(),
        "tracks": len(src.tracks),
        "minutes_used": round(minutes, 1),
        "minutes_full": round(sum(t.seconds_full for t in src.tracks) / 60, 1),
        "segments": lib.n_segments,
        "skipped_files": src.skipped,
        "stem_songs": sorted(src.stems),
        "max_seconds_per_track": max_seconds,
    }
    return src, lib, systems, lib_info


def silent_source(y: np.ndarray, start_s: float, length_s: float) -> bool:
    """Whether the clean track ``y`` is silent where a clip is cut: RMS below the product's own silence line
    (retrieval.clip_query.SILENCE_DBFS; a held-out pingus-data track has silent stretches)."""
    part = y[int(round(start_s * SAMPLE_RATE)) : int(round((start_s + length_s) * SAMPLE_RATE))]
    rms = float(np.sqrt(np.mean(np.square(part, dtype=np.float64)))) if part.size else 0.0
    return 20.0 * np.log10(max(rms, 1e-12)) < SILENCE_DBFS


def _passage_rows(
    lib: Library,
    systems: dict[str, Any],
    src: Sources,
    sq: list[Any],
    *,
    n_queries: int,
    rng: np.random.Generator,
    notes: list[str],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, list[Query]]]:
    """(b) cross-stem rows and (c) distortion rows, in memory, for every system; and (c)'s queries."""
    stem_rows: list[dict[str, Any]] = []
    for kind in ("guitar", "backing"):
        qs = [q for q in sq if q.kind == kind]
        if qs:
            qf = [features(y=q.audio) for q in qs]
            for name, emb in systems.items():
                stem_rows.append({"stem": kind, "system": name, "queries": len(qs),
                                  **_pick(score_passages(lib, name, emb, qs, qf))})  # fmt: skip
    refind_rows: list[dict[str, Any]] = []
    audio = [t.audio for t in src.tracks]
    refind_qs: dict[str, list[Query]] = {}
    for label, kind, length in DISTORTIONS:
        drawn = make_recorded_queries(tracks=audio, kind=kind, n=n_queries, rng=rng, length_s=length)
        # A clip cut where the track itself is silent has no passage to re-find (the product answers "the
        # clip is silent", or "noise-like" once noise is added): left out, and counted in the notes.
        qs = [q for q in drawn if not silent_source(audio[q.work_index], q.start_s, q.length_s)]
        if len(qs) < len(drawn):
            notes.append(f"(c) {label}: {len(drawn) - len(qs)} of {len(drawn)} clips left out: cut where the "
                         f"clean track is silent (RMS below {SILENCE_DBFS:g} dBFS), nothing to re-find.")  # fmt: skip
        refind_qs[label] = qs
        qf = [features(y=q.audio) for q in qs]
        for name, emb in systems.items():
            refind_rows.append({"distortion": label, "system": name, "queries": len(qs),
                                **_pick(score_passages(lib, name, emb, qs, qf))})  # fmt: skip
    return stem_rows, refind_rows, refind_qs


def run_likeness(
    *,
    audio_dir: Path,
    out_dir: Path,
    workdir: Path,
    seed: int = 0,
    checkpoint: Path | None = None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    n_queries: int = DEFAULT_QUERIES,
    product: bool = True,
    candidate: Path | None = None,
    product_checkpoint: Path | None = None,
    sources: tuple[str, ...] = HELDOUT_SOURCES,
) -> Report:
    """Run (a), (b), (c) on the ``sources`` folders under ``audio_dir``; writes ``likeness.json`` / ``.md``.

    In memory: the baseline, ``checkpoint`` (default: shipped) and ``candidate``; the product
    path searches with ``product_checkpoint`` (default: the shipped encoder)."""
    t_start = time.perf_counter()
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    timings: dict[str, Any] = {}
    src, lib, systems, lib_info = _library(
        audio_dir, max_seconds=max_seconds, sources=sources, checkpoint=checkpoint, candidate=candidate,
        notes=notes, timings=timings,
    )  # fmt: skip

    # (a) same source, in memory
    t0 = time.perf_counter()
    queries = source_queries(src)
    qframes = [features(y=q.audio) for q in queries]
    base = chance_and_ceiling(src, queries)
    same_rows = [
        {
            "system": name,
            "aspect": ASPECT_OF.get(name, ""),
            "path": "in memory (exact cosine, no rerank)",
            "queries": len(queries),
            "p_at_10": same_source_memory(lib, name, emb, src, queries, qframes),
        }
        for name, emb in systems.items()
    ]
    timings["same_source_memory_s"] = time.perf_counter() - t0

    # (b) cross-stem and (c) distortions, in memory
    t0 = time.perf_counter()
    sq = stem_queries(src, rng)
    stem_rows, refind_rows, refind_qs = _passage_rows(
        lib, systems, src, sq, n_queries=n_queries, rng=rng, notes=notes
    )
    timings["passages_memory_s"] = time.perf_counter() - t0

    product_rows: list[dict[str, Any]] = []
    product_stems: list[dict[str, Any]] = []
    if product:
        # The in-memory results first: a long product run that fails still leaves them.
        likeness_report(
            src, lib, lib_info, base, queries, same_rows, stem_rows, refind_rows, timings, notes,
            seed=seed, max_seconds=max_seconds, n_queries=n_queries, elapsed=time.perf_counter() - t_start,
        ).write(out_dir)  # fmt: skip
        from bench.likeness_product import run_product

        t0 = time.perf_counter()
        product_rows, product_stems, product_refind, model_version = run_product(
            src=src, queries=queries, stem_qs=sq, refind_qs=refind_qs, workdir=workdir,
            checkpoint=product_checkpoint, k=K, aspect_only=ASPECT_ONLY,
            mels=[lib.frames[lib.track_ids[i]][:, MEL] for i in range(len(src.tracks))],
        )  # fmt: skip
        refind_rows += product_refind
        notes.append(f"Product path: retrieval.ingest + retrieval.search with checkpoint {model_version}.")
        timings["product_s"] = time.perf_counter() - t0
    elapsed = time.perf_counter() - t_start
    timings["total_s"] = elapsed
    report = likeness_report(
        src, lib, lib_info, base, queries, same_rows + product_rows, stem_rows + product_stems, refind_rows,
        timings, notes, seed=seed, max_seconds=max_seconds, n_queries=n_queries, elapsed=elapsed,
    )  # fmt: skip
    report.write(out_dir)
    return report


def _pick(m: dict[str, float]) -> dict[str, float]:
    return {k: m[k] for k in ("top1", "top10", *REFIND_EXTRA) if k in m}
