"""The segment rows search reads: one column list, one typed record, one conversion to a rerank candidate."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from pgvector import Vector

from cadenza.db import f16_array
from retrieval.descriptors import KEY_NAMES
from retrieval.rerank import Candidate

#: The columns of :class:`SegmentRow` (before its ``dist``), over ``segments s JOIN tracks t``.
SEGMENT_COLUMNS = (
    "s.id, s.track_id, s.start_s, s.end_s, t.title, t.composer, t.work, t.era, t.path, t.duration_s,"
    " s.chroma_mean, s.chroma_seq, s.key_index, s.mode, s.key_confidence, s.tempo_bpm, s.loudness_db,"
    " s.brightness_hz, s.onset_density, s.valence, s.arousal, s.embedding, s.timbre, t.timbre_version, t.timbre"
)


class SegmentRow(NamedTuple):
    """A segment as the nearest-neighbour routes return it: :data:`SEGMENT_COLUMNS`, then the
    cosine distance to the query. A tuple, so psycopg rows convert without copying fields."""

    id: int
    track_id: int
    start_s: float
    end_s: float
    title: str
    composer: str
    work: str
    era: str
    path: str
    duration_s: float
    chroma_mean: list[float]  # [12]
    chroma_seq: bytes | None  # float16 [n, 12]
    key_index: int | None
    mode: str | None
    key_confidence: float | None
    tempo_bpm: float | None
    loudness_db: float | None
    brightness_hz: float | None
    onset_density: float | None
    valence: float | None
    arousal: float | None
    embedding: Vector
    timbre: Vector | None  # NULL before migration 008's reindex
    timbre_version: str | None
    track_timbre: Vector | None  # the track's mean timbre (sql/012_track_timbre.sql)
    dist: float


def segment_rows(rows: list[tuple[Any, ...]]) -> list[SegmentRow]:
    return [SegmentRow(*r) for r in rows]


def candidate(r: SegmentRow) -> Candidate:
    """A rerank :class:`Candidate` of row ``r``."""
    return Candidate(
        segment_id=int(r.id), track_id=int(r.track_id), start_s=float(r.start_s), end_s=float(r.end_s),
        emb_sim=1.0 - float(r.dist), title=r.title, composer=r.composer, work=r.work, era=r.era, path=r.path,
        chroma_mean=np.asarray(r.chroma_mean, dtype=np.float64), chroma_seq=f16_array(r.chroma_seq),
        embedding=r.embedding.to_numpy(),
        timbre=r.timbre.to_numpy() if r.timbre is not None else None,
        timbre_version=r.timbre_version,
        track_timbre=r.track_timbre.to_numpy() if r.track_timbre is not None else None,
        descriptors={
            "key_index": r.key_index, "key": KEY_NAMES[r.key_index] if r.key_index is not None else None,
            "mode": r.mode, "key_confidence": r.key_confidence, "tempo_bpm": r.tempo_bpm,
            "loudness_db": r.loudness_db, "brightness_hz": r.brightness_hz, "onset_density": r.onset_density,
            "valence": r.valence, "arousal": r.arousal, "duration_s": float(r.duration_s),
        },
    )  # fmt: skip
