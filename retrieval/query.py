"""Turning a search request into one query profile: a clip, library moments, or a blend of them.

A clip is :mod:`retrieval.clip_query`, a library moment :mod:`retrieval.moment_query`. Blends
add the unit vectors of the moments and subtract half of the "minus" ones; the first source
gives the descriptors the reranker compares with.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import psycopg

from cadenza.errors import InputError
from cadenza.settings import LimitSettings
from encoder.protocols import MomentEmbedder
from retrieval.clip_query import BuiltQuery, from_audio, unit
from retrieval.descriptors import KEY_NAMES
from retrieval.moment_query import Moment, moment
from retrieval.types import MomentRef, SearchRequest


def build(
    conn: psycopg.Connection,
    *,
    request: SearchRequest,
    embedder: MomentEmbedder,
    min_clip_s: float = LimitSettings.min_clip_seconds,
    max_clip_s: float = LimitSettings.max_clip_seconds,
) -> BuiltQuery:
    """The query of a :class:`retrieval.types.SearchRequest` (audio, moments, or a blend)."""
    if request.audio is None and not request.moments:
        raise InputError("a search needs an audio clip or a library moment to start from")
    parts: list[np.ndarray] = []
    built: BuiltQuery | None = None
    if request.audio is not None:
        built = from_audio(
            audio=request.audio, embedder=embedder, start_s=request.start_s, duration_s=request.duration_s,
            min_clip_s=min_clip_s, max_clip_s=max_clip_s,
            transpose_probes=tuple(request.transpose_probes),
        )  # fmt: skip
        parts.append(built.profile.embedding)

    def load(refs: tuple[MomentRef, ...]) -> list[Moment]:
        mv = embedder.model_version
        return [
            moment(conn, track_id=m.track_id, start_s=m.start_s, model_version=mv, embedder=embedder)
            for m in refs
        ]

    moments, minus = load(request.moments), load(request.minus)
    sources = [m.moment_source for m in (*moments, *minus)]
    fallbacks = sorted({m.fallback_reason for m in (*moments, *minus) if m.fallback_reason})
    timings: dict[str, float] = {}
    for m in (*moments, *minus):
        for k, v in m.timings_ms.items():
            timings[k] = timings.get(k, 0.0) + v
    parts.extend(m.profile.embedding for m in moments)
    q = np.sum(parts, axis=0) - 0.5 * (np.sum([m.profile.embedding for m in minus], axis=0) if minus else 0.0)
    exclude = tuple(sorted({int(m.track_id) for m in moments}))
    if built is None:
        first = moments[0]
        chroma = np.mean([m.profile.chroma_mean for m in moments], axis=0)
        info = {
            "source": "moment" if len(moments) == 1 and not minus else "blend",
            "track_id": first.track_id, "title": first.title, "composer": first.composer,
            "start": round(first.start_s, 2), "end": round(first.end_s, 2),
            "key_index": first.key_index, "mode": first.mode, "key_confidence": first.key_confidence,
            "key": KEY_NAMES[first.key_index] if first.key_index is not None else None,
            "tempo_bpm": first.profile.tempo_bpm, "valence": first.profile.valence, "arousal": first.profile.arousal,
            "chroma_mean": [round(float(v), 4) for v in chroma],
            "moment_source": first.moment_source, "moment_sources": sources,
        }  # fmt: skip
        if fallbacks:
            info["fallback_reason"] = "; ".join(fallbacks)
        # The blend's direction, and the first moment's measurements for the reranker to compare.
        profile = replace(first.profile, embedding=unit(q), chroma_mean=chroma, transposed=())
        # Only a single moment can be "nothing": a blend still has the other moments' direction.
        nothing = first.nothing_reason if len(moments) == 1 and not minus else None
        return BuiltQuery(
            profile,
            first.chroma10,
            info,
            exclude_tracks=exclude,
            nothing_reason=nothing,
            timings_ms=timings,
        )
    if moments or minus:
        built.profile.embedding = unit(q)
        built.profile.transposed = ()  # a blend has no one key to move
        built.info["source"] = "blend"
        built.info["moment_sources"] = sources
        if fallbacks:
            built.info["fallback_reason"] = "; ".join(fallbacks)
        built.exclude_tracks = exclude
        for k, v in timings.items():
            built.timings_ms[k] = built.timings_ms.get(k, 0.0) + v
    return built
