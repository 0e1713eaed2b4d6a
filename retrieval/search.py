"""Search: query → filtered nearest segments (keeping k) → rerank → same passage → diversity → localize → match, likeness.

Filters must not cost results: :mod:`retrieval.nearest` picks the route that returns k tracks
through any filter (cells, exact scan or HNSW). A clip with a single voice goes the melody
route instead (:mod:`retrieval.melody_search`). The rest is pure: :mod:`retrieval.rerank`
scores, :mod:`retrieval.diversity` spreads, :mod:`retrieval.results` finishes.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import psycopg

from cadenza.db import Database, autocommit, f16_array
from cadenza.errors import InputError
from cadenza.settings import LimitSettings
from encoder.protocols import MomentEmbedder
from retrieval import context as context_mod
from retrieval import harmony, melody_search, passage, repeats
from retrieval import query as query_mod
from retrieval.calibration import NOTHING_SIMILAR_BELOW, SAME_PASSAGE_MATCH, load_calibration
from retrieval.clip_query import NOISE_LIKE_REASON, BuiltQuery
from retrieval.diversity import moves
from retrieval.filters import filter_sql
from retrieval.nearest import (
    EF_SEARCH_MAX,
    SEARCH_USES_ITERATIVE_SCAN,
    harmony_nearest,
    merge_probe,
    nearest,
    probe_nearest,
    timbre_nearest,
)
from retrieval.rerank import QueryProfile, score_candidates
from retrieval.results import likeness_of, matches_of, results_of, rounded_timings, track_count
from retrieval.segment_rows import SegmentRow, candidate
from retrieval.store import heard_composers, model_mismatch, other_models
from retrieval.track_graph import GRAPH_WEIGHT, add_graph_term
from retrieval.track_scan import NearestQuery
from retrieval.types import MAX_K, Aspects, SearchRequest, SearchResponse, check_diversity

log = logging.getLogger(__name__)

#: The reranker sees this many rows nearest by embedding (plenty for k ≤ 100 after NMS).
RERANK_POOL = 200
#: ... plus the best segment of this many tracks nearest by timbre, per result asked for
#: (at least TIMBRE_POOL_MIN), when the sound aspect counts (retrieval.nearest.timbre_nearest).
TIMBRE_POOL_PER_K = 5
TIMBRE_POOL_MIN = 50
#: ... plus the best segment of this many tracks nearest by harmony (retrieval.nearest.harmony_nearest),
#: each checked for the same passage: under a phone line the embedding's pool missed the right track
#: in half the misses, and in memory it was among the 10 nearest by harmony for every phone clip
#: (training sources, bench/results/harmony_source.md).
HARMONY_TRACKS = 10
#: ... 20 for a clip that has lost its bass (with passage.PASSAGE_TRACKS_BAND_LIMITED; training sources, phone).
HARMONY_TRACKS_BAND_LIMITED = 20


ROUTES = ("auto", "melody", "audio")
#: A first result whose chroma lines up with the query this well is the query's own passage (route and
#: noise-like decisions). Training sources, audio route: the right passage's line-up under a phone line
#: was 0.82 or more (10th percentile 0.94), under reverb 0.65 or more (0.87); a wrong first track's at
#: most 0.70 (phone); white, brown and synthetic noise's best line-up 0.65 or less (0.69 against a library
#: track of other white noise). The calibrated match alone missed most phone clips (their median match 0.35).
OWN_PASSAGE_ALIGNMENT = 0.8
#: Said in the answer when a clip that sounded like one voice was answered by the audio route.
RECORDING_ROUTE_REASON = "the clip sounded like one voice, but the audio route found its own passage"


def _sung(
    request: SearchRequest, info: dict[str, Any], timings: dict[str, float]
) -> melody_search.SungQuery | None:
    """The query's tune when ``request`` goes the melody route (see :mod:`retrieval.melody_search`), else None.

    A cheap test first (the salience pitch's harmonic share, ~10 ms), so a clip of several
    instruments never pays for the pitch tracker; then PESTO decides. InputError when
    ``route="melody"`` is forced on a clip with too little tune in it.
    """
    if request.route not in ROUTES:
        raise InputError(f"route must be one of {', '.join(ROUTES)}, got {request.route!r}")
    if request.audio is None or request.moments or request.minus or request.route == "audio":
        return None
    t0 = time.perf_counter()
    y = melody_search.melody_clip(audio=request.audio, start_s=request.start_s, duration_s=request.duration_s)
    if request.route == "auto" and melody_search.quick_share(y=y) < melody_search.SINGLE_VOICE_MIN_SHARE:
        timings["pitch"] = (time.perf_counter() - t0) * 1000
        return None
    sung = melody_search.sung_query(y=y)
    timings["pitch"] = (time.perf_counter() - t0) * 1000
    info["melody"] = sung.to_json()
    if request.route == "melody" and not sung.enough_tune:
        raise InputError(
            "there is too little tune in the clip to search by melody; hum or whistle at least a few notes"
        )
    return sung if request.route == "melody" or sung.single_voice else None


def _track_chroma(
    conn: Any, track_ids: list[int], *, band: bool = False
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Stored 10-fps chroma ``[T, 12]`` of ``track_ids`` (those that have one), and when ``band`` their phone
    band's chroma (those stored since migration 009)."""
    if not track_ids:
        return {}, {}
    rows = conn.execute(
        f"SELECT track_id, chroma, {'band_chroma' if band else 'NULL'} FROM track_chroma WHERE track_id = ANY(%s)",
        (track_ids,),
        binary=True,
    ).fetchall()
    return {int(t): f16_array(b) for t, b, _ in rows}, {
        int(t): f16_array(b) for t, _, b in rows if b is not None
    }


def _timbre_candidates(
    conn: psycopg.Connection,
    profile: QueryProfile,
    *,
    aspects: Aspects,
    where: str,
    params: list[Any],
    k: int,
) -> list[SegmentRow]:
    """Rows nearest the query's sound (retrieval.nearest.timbre_nearest) when the sound aspect counts; else []."""
    if aspects.sound <= 0 or profile.timbre is None or profile.timbre_weight <= 0:
        return []
    return timbre_nearest(
        conn, timbre=profile.timbre, timbre_version=profile.timbre_version, embedding=profile.embedding,
        where=where, params=params, n_tracks=max(TIMBRE_POOL_PER_K * k, TIMBRE_POOL_MIN),
    ).rows  # fmt: skip


def _harmony_candidates(
    conn: psycopg.Connection, built: BuiltQuery, *, where: str, params: list[Any]
) -> list[SegmentRow]:
    """Rows nearest the query's chord sequence (retrieval.nearest.harmony_nearest)."""
    return harmony_nearest(
        conn, probes=harmony.query_probes(built.chroma10), embedding=built.profile.embedding, where=where,
        params=params, n_tracks=HARMONY_TRACKS_BAND_LIMITED if built.band_limited else HARMONY_TRACKS,
    ).rows  # fmt: skip


def search(
    *,
    db: Database,
    embedder: MomentEmbedder,
    request: SearchRequest,
    min_clip_s: float = LimitSettings.min_clip_seconds,
    max_clip_s: float = LimitSettings.max_clip_seconds,
) -> SearchResponse:
    """Run one search (see the module docstring). Raises InputError / NotFound for bad requests."""
    t_all = time.perf_counter()
    if not 1 <= request.k <= MAX_K:
        raise InputError(f"k must be between 1 and {MAX_K}, got {request.k}")
    check_diversity(request.diversity)
    aspects = (request.aspects or Aspects()).validated()
    timings: dict[str, float] = {}
    with autocommit(db) as conn:
        built = query_mod.build(
            conn, request=request, embedder=embedder, min_clip_s=min_clip_s, max_clip_s=max_clip_s
        )
        timings.update(built.timings_ms)
        info = dict(built.info)
        info["model_version"] = embedder.model_version
        if built.nothing_reason:
            info["nothing_reason"] = built.nothing_reason
            timings["total"] = (time.perf_counter() - t_all) * 1000
            return SearchResponse(
                query=info, results=[], nothing_similar=True, timings_ms=rounded_timings(timings)
            )

        t0 = time.perf_counter()
        where, params = filter_sql(
            request.filters, model_version=embedder.model_version, extra_exclude=built.exclude_tracks
        )
        # A noise-like clip gets no melody route: it is answered only by its own passage (below).
        sung = None if built.noise_like else _sung(request, info, timings)
        if sung is not None:
            if request.route == "auto":
                # A recording of a library passage can sound like one voice (a lead line over a quiet
                # backing, a phone line that leaves little but the tune): when the audio route finds the
                # clip's own passage (in its own key), that is the answer; a hum or a whistle finds none
                # there. Asked first, so a recording never pays for the melody matcher (2.4 s at 20k
                # windows, `cadenza bench humming`).
                audio = _audio_route(
                    conn, db=db, embedder=embedder, request=request, built=built, aspects=aspects, where=where,
                    params=params, info=dict(info), timings=dict(timings), t0=time.perf_counter(), t_all=t_all,
                )  # fmt: skip
                if same_passage_found(audio, own_key=True):
                    audio.query["route_reason"] = RECORDING_ROUTE_REASON
                    return audio
            return _melody_route(conn, sung=sung, request=request, where=where, params=params, info=info,
                                 timings=timings, t_all=t_all)  # fmt: skip
        resp = _audio_route(
            conn, db=db, embedder=embedder, request=request, built=built, aspects=aspects, where=where,
            params=params, info=info, timings=timings, t0=t0, t_all=t_all,
        )  # fmt: skip
    if built.noise_like and not same_passage_found(resp):
        resp.query["nothing_reason"] = NOISE_LIKE_REASON
        return SearchResponse(query=resp.query, results=[], nothing_similar=True, timings_ms=resp.timings_ms)
    return resp


def same_passage_found(resp: SearchResponse, *, own_key: bool = False) -> bool:
    """Whether the first result is the query's own passage: its chroma lines up at
    :data:`OWN_PASSAGE_ALIGNMENT` or better (retrieval.passage); ``own_key``: and it was not found by a
    transposition probe (a recording of a passage is in its key; a hum often is not). Not by the calibrated
    match: any two noises embed alike (match 1.0), and with match or probe-found results counted, hums went
    the audio route and lost 1-2 of 32 per condition (`cadenza bench humming`, session 10)."""
    if not resp.results:
        return False
    top = resp.results[0]
    if own_key and top.components.get("query_transposed", 0.0):
        return False
    return top.components.get("passage", 0.0) >= OWN_PASSAGE_ALIGNMENT


def _melody_route(
    conn: psycopg.Connection,
    *,
    sung: melody_search.SungQuery,
    request: SearchRequest,
    where: str,
    params: list[Any],
    info: dict[str, Any],
    timings: dict[str, float],
    t_all: float,
) -> SearchResponse:
    """The melody route (:mod:`retrieval.melody_search`); ``info`` and ``timings`` are filled in place."""
    t0 = time.perf_counter()
    hits = melody_search.search_melody(
        conn, sung=sung, where=where, params=params, k=request.k, one_per_track=request.one_per_track
    )
    info.update(hits.info)
    timings["search"] = (time.perf_counter() - t0) * 1000
    timings["total"] = (time.perf_counter() - t_all) * 1000
    return SearchResponse(
        query=info,
        results=hits.results,
        nothing_similar=hits.nothing_similar,
        timings_ms=rounded_timings(timings),
    )


def _audio_route(
    conn: psycopg.Connection,
    *,
    db: Database,
    embedder: MomentEmbedder,
    request: SearchRequest,
    built: BuiltQuery,
    aspects: Aspects,
    where: str,
    params: list[Any],
    info: dict[str, Any],
    timings: dict[str, float],
    t0: float,
    t_all: float,
) -> SearchResponse:
    """The audio route: nearest segments (+ key probes, timbre and harmony sources) → rerank → same
    passage → track graph → diversity → localize → match, likeness. ``info`` and ``timings`` are
    filled in place; ``t0``: when the search stage began."""
    info["route"] = "audio"
    n = min(max(10 * request.k, 100), EF_SEARCH_MAX)
    iterative = SEARCH_USES_ITERATIVE_SCAN and bool(getattr(db, "supports_iterative_scan", False))
    query = NearestQuery(
        built.profile.embedding, where, params, n, min_tracks=request.k if request.one_per_track else 1
    )
    found = nearest(
        conn, query, restrictive=request.filters.active or bool(built.exclude_tracks), iterative=iterative,
        model_version=embedder.model_version,
    )  # fmt: skip
    probe_of: dict[int, int] = {}  # segment id -> semitones of the probe that found it
    for semis, q in built.profile.transposed:
        # A passage in another key ranks near the top of its probe or not at all: 3k rows do.
        probe_query = NearestQuery(q, where, params, min(n, max(3 * request.k, 30)))
        probe = probe_nearest(conn, probe_query, iterative=iterative)
        found = merge_probe(found, probe, semis, probe_of)
    by_timbre = _timbre_candidates(
        conn, built.profile, aspects=aspects, where=where, params=params, k=request.k
    )
    by_harmony = _harmony_candidates(conn, built, where=where, params=params)
    if not found.rows and (others := other_models(conn, embedder.model_version)):
        # Not "nothing similar": a reindex under this running server left it on an old model.
        raise model_mismatch(embedder.model_version, others)
    # Play history is read only when its switch is on: off, nothing of it reaches the ranking.
    heard = (
        frozenset(heard_composers(conn, request.listener_id))
        if request.listener_id and request.context.history
        else None
    )
    cal = load_calibration(conn, model_version=embedder.model_version, memo=getattr(db, "memo", None))
    timings["search"] = (time.perf_counter() - t0) * 1000

    t0 = time.perf_counter()
    nearest_rows = sorted(found.rows, key=lambda r: r.dist)[: max(RERANK_POOL, 5 * request.k)]
    seen = {int(r.id) for r in nearest_rows}
    pool = [candidate(r) for r in nearest_rows]
    for r in (*by_timbre, *by_harmony):
        if int(r.id) not in seen:
            seen.add(int(r.id))
            pool.append(candidate(r))
    applied = context_mod.apply(request, heard=heard)
    cands = score_candidates(
        candidates=pool, query=built.profile, aspects=aspects, tempo_factor=request.tempo_factor,
        **applied.rerank_kwargs(),
    )  # fmt: skip
    for c in pool:
        if probe_of.get(c.segment_id):
            c.components["query_transposed"] = float(probe_of[c.segment_id])
    # Same passage: the query's chroma slid over the top tracks' stored chroma (retrieval.passage).
    t_passage = time.perf_counter()
    harmony_tracks = list(dict.fromkeys(int(r.track_id) for r in by_harmony))
    n_tracks = passage.PASSAGE_TRACKS_BAND_LIMITED if built.band_limited else passage.PASSAGE_TRACKS
    chromas, band_chromas = _track_chroma(
        conn, passage.top_tracks(cands, n_tracks, also=harmony_tracks), band=built.band_limited
    )
    query_phases = built.chroma_phases()
    aligned = passage.check_passages(
        cands=cands,
        also=harmony_tracks,
        band_chromas=band_chromas,
        query_chroma=built.chroma10,
        chromas=chromas,
        window_frames=embedder.windowing.window_frames,
        query_phases=query_phases,
        n_tracks=n_tracks,
    )
    cands = passage.add_passage_term(cands, aligned)
    timings["passage"] = (time.perf_counter() - t_passage) * 1000
    # The sound of the best tracks' neighbourhood: a walk over the pool's track graph (retrieval.track_graph).
    t_graph = time.perf_counter()
    cands = add_graph_term(
        cands, built.profile, aspects=aspects, weight=GRAPH_WEIGHT,
        seed_without=tuple(context_mod.SIGNAL_TERMS.values()),
    )  # fmt: skip
    timings["graph"] = (time.perf_counter() - t_graph) * 1000
    matches = matches_of(cands, built, cal)
    same = frozenset(sid for sid, m in matches.items() if m >= SAME_PASSAGE_MATCH)
    scored = cands
    cands, chosen = context_mod.rank(
        pool,
        k=request.k,
        one_per_track=request.one_per_track,
        diversity=request.diversity,
        same_passage=same,
    )
    moved = moves(ranked=cands, chosen=chosen)
    liked = likeness_of(scored, chosen, same, n_tracks=track_count(conn))
    timings["rerank"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    info["context"] = context_mod.report(
        request=request, applied=applied, pool=pool, shown=chosen, same_passage=same
    )
    timings["context"] = (time.perf_counter() - t0) * 1000

    t0 = time.perf_counter()
    chromas.update(_track_chroma(conn, sorted({c.track_id for c in chosen} - set(chromas)))[0])
    results = results_of(chosen, built, chromas, matches, liked, moved, aligned)
    timings["localize"] = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    repeats.add_also_at(results, query_chroma=built.chroma10, query_phases=query_phases, aligned=aligned,
                        chromas=chromas, band_chromas=band_chromas)  # fmt: skip
    timings["repeats"] = (time.perf_counter() - t0) * 1000

    top_conf = results[0].match if results else 0.0
    nothing = not results or top_conf < NOTHING_SIMILAR_BELOW
    info.update({"ann": found.path, "candidates": len(found.rows), "calibrated": cal is not None})
    info["timbre_candidates"] = len(by_timbre)
    info["harmony_candidates"] = len(by_harmony)
    info["band_limited"] = built.band_limited
    info["diversity"] = request.diversity
    info["aspects"] = {"sound": aspects.sound, "harmony": aspects.harmony, "rhythm": aspects.rhythm,
                       "melody": aspects.melody}  # fmt: skip
    info["key_probes"] = [0, *(s for s, _ in built.profile.transposed)]  # semitones the query was searched at
    if heard:  # a listener who has played something (the rate is 1 by definition otherwise)
        info["discovery_rate"] = (
            round(float(np.mean([r.composer.lower() not in heard for r in results])), 3) if results else 0.0
        )
    if nothing:
        info["nothing_reason"] = "no library moment stands out from the rest for this query"
    timings["total"] = (time.perf_counter() - t_all) * 1000
    return SearchResponse(
        query=info, results=results, nothing_similar=nothing, timings_ms=rounded_timings(timings)
    )
