"""The listener's query clip, kept compressed beside its conversation so the page can play it (A/B).

An upload is otherwise kept only as the searched passage's samples (for follow-ups). Here up to
:data:`KEEP_S` seconds around the searched passage are compressed to MP3 (:mod:`cadenza.compress`,
capped at :data:`MAX_KEPT_BYTES`) and stored in ``query_clips``, which belongs to the conversation
(deleted with it). The clip is served by its random id only, with byte ranges so the browser can seek.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import numpy as np

from assistant.pictures import waveform_peaks
from cadenza.compress import encode_mp3
from cadenza.db import Database
from cadenza.errors import CadenzaError, NotFound

log = logging.getLogger(__name__)

#: Seconds of the upload kept around the searched passage: enough to hear where it sits.
KEEP_S = 60.0
#: A kept clip larger than this is not stored (48 kbit/s MP3 makes about 360 KB of KEEP_S).
MAX_KEPT_BYTES = 600_000
PEAK_BINS = 300
MEDIA_TYPE = "audio/mpeg"


@dataclass(frozen=True)
class KeptClip:
    id: uuid.UUID
    duration_s: float
    passage_start: float  # seconds into the kept audio
    passage_end: float
    peaks: tuple[float, ...]


def keep_window(
    *, n_samples: int, sr: int, start_s: float, end_s: float, keep_s: float = KEEP_S
) -> tuple[int, int]:
    """The sample range of at most ``keep_s`` seconds that holds the passage, centred on it where it can."""
    total = n_samples
    keep = min(total, int(round(keep_s * sr)))
    a, b = int(round(start_s * sr)), int(round(end_s * sr))
    centre = (a + b) // 2
    lo = max(0, min(centre - keep // 2, total - keep))
    return lo, lo + keep


def keep(
    db: Database, *, conversation_id: uuid.UUID, audio: np.ndarray, sr: int, start_s: float, end_s: float
) -> KeptClip | None:
    """Compress and store the clip; None (logged) when it cannot be kept: the answer stands without A/B."""
    lo, hi = keep_window(n_samples=audio.size, sr=sr, start_s=start_s, end_s=end_s)
    part = audio[lo:hi]
    try:
        data = encode_mp3(audio=part, sr=sr)
    except CadenzaError:
        log.exception("the query clip of conversation %s could not be compressed", conversation_id)
        return None
    if len(data) > MAX_KEPT_BYTES:
        log.warning(
            "the query clip of conversation %s is %d bytes compressed; not kept", conversation_id, len(data)
        )
        return None
    peaks = tuple(round(float(p), 3) for p in waveform_peaks(audio=part, bins=PEAK_BINS))
    p_start, p_end = max(0.0, start_s - lo / sr), max(0.0, min(end_s, hi / sr) - lo / sr)
    with db.connection() as conn:
        row = conn.execute(
            "INSERT INTO query_clips (conversation_id, media_type, audio, duration_s, passage_start, passage_end, peaks)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (conversation_id, MEDIA_TYPE, data, part.size / sr, p_start, p_end, list(peaks)),
        ).fetchone()
        conn.commit()
    assert row is not None
    return KeptClip(
        id=row[0], duration_s=part.size / sr, passage_start=p_start, passage_end=p_end, peaks=peaks
    )


def parse_id(raw: str | uuid.UUID) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise NotFound("no such clip") from None


def info(db: Database, clip_id: str | uuid.UUID) -> KeptClip | None:
    """The kept clip's description (no audio), or None when it is gone."""
    with db.connection() as conn:
        row = conn.execute(
            "SELECT id, duration_s, passage_start, passage_end, peaks FROM query_clips WHERE id = %s",
            (parse_id(clip_id),),
        ).fetchone()
    if row is None:
        return None
    return KeptClip(
        id=row[0], duration_s=float(row[1]), passage_start=float(row[2]), passage_end=float(row[3]),
        peaks=tuple(float(p) for p in row[4]),
    )  # fmt: skip


def audio_bytes(db: Database, clip_id: uuid.UUID) -> tuple[bytes, str]:
    with db.connection() as conn:
        row = conn.execute("SELECT audio, media_type FROM query_clips WHERE id = %s", (clip_id,)).fetchone()
    if row is None:
        raise NotFound("this clip is gone (its conversation was deleted)")
    return bytes(row[0]), str(row[1])
