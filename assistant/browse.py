"""Browse: the library (search and filters) and a track page (waveform, cited moments, every moment)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from litestar import get
from litestar.response import Template
from markupsafe import Markup
from psycopg.rows import class_row

from assistant import describe
from assistant.media import track_path
from assistant.pictures import timeline_svg, waveform_peaks
from assistant.services import Services, library_names
from cadenza.audio import DecodeOptions, load_audio
from cadenza.errors import NotFound
from retrieval.store import TrackInfo

log = logging.getLogger(__name__)


#: A track as retrieval.store.TrackInfo has it (psycopg's class_row fills it by these names).
_TRACK = (
    "SELECT t.id, t.path, t.title, t.composer, t.work, t.era, t.year, t.duration_s,"
    " (SELECT count(*) FROM segments s WHERE s.track_id = t.id) AS n_segments, t.model_version FROM tracks t"
)


def _shown(t: TrackInfo) -> dict[str, Any]:
    """A track as the library and track pages show it."""
    return {
        "id": t.id, "title": t.title or f"Track {t.id}", "composer": t.composer, "work": t.work, "era": t.era,
        "year": t.year, "duration": describe.timestamp(t.duration_s), "segments": t.n_segments,
    }  # fmt: skip


@dataclass(frozen=True)
class SegmentRow:
    start_s: float
    end_s: float
    key_index: int | None
    mode: str | None
    tempo_bpm: float | None


def _library_rows(
    svc: Services, q: str, composer: str, era: str
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    where, args = ["true"], []
    if q:
        where.append("(title ILIKE %s OR composer ILIKE %s OR work ILIKE %s)")
        like = "%" + q.replace("%", r"\%").replace("_", r"\_") + "%"
        args += [like, like, like]
    if composer:
        where.append("lower(composer) = lower(%s)")
        args.append(composer)
    if era:
        where.append("era = %s")
        args.append(era)
    with svc.db.connection() as conn, conn.cursor(row_factory=class_row(TrackInfo)) as cur:
        rows = cur.execute(
            f"{_TRACK} WHERE {' AND '.join(where)} ORDER BY t.composer, t.title, t.id LIMIT 500", args
        ).fetchall()
    composers, eras = library_names(svc.db)
    return [_shown(r) for r in rows], composers, eras


@get("/library", include_in_schema=False)
async def library_page(svc: Services, q: str = "", composer: str = "", era: str = "") -> Template:
    tracks, composers, eras = await anyio.to_thread.run_sync(
        _library_rows, svc, q.strip()[:200], composer, era
    )
    return Template(
        "library.html",
        context={
            "tracks": tracks,
            "composers": composers,
            "eras": eras,
            "q": q,
            "composer": composer,
            "era": era,
        },
    )


def waveform(svc: Services, track_id: int, path: Path) -> np.ndarray:
    """Peaks of the whole track, cached under CADENZA_HOME/cache/waveforms."""
    cache = svc.settings.paths.cache / "waveforms"
    stat = path.stat()
    key = cache / f"{track_id}-{int(stat.st_mtime)}-{stat.st_size}.npy"
    if key.is_file():
        return np.load(key)
    y = load_audio(path=path, options=DecodeOptions(sr=4000))
    peaks = waveform_peaks(audio=y, bins=400)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(key, peaks)
    return peaks


def _track_context(svc: Services, track_id: int) -> dict[str, Any]:
    with svc.db.connection() as conn:
        with conn.cursor(row_factory=class_row(TrackInfo)) as cur:
            row = cur.execute(f"{_TRACK} WHERE t.id = %s", (track_id,)).fetchone()
        if row is None:
            raise NotFound(f"no track {track_id} in the library")
        with conn.cursor(row_factory=class_row(SegmentRow)) as segments:
            segs = segments.execute(
                "SELECT start_s, end_s, key_index, mode, tempo_bpm FROM segments WHERE track_id = %s ORDER BY start_s",
                (track_id,),
            ).fetchall()
        cited = conn.execute(
            "SELECT DISTINCT ON (round(start_s)) start_s, end_s FROM citations WHERE track_id = %s"
            " ORDER BY round(start_s), start_s",
            (track_id,),
        ).fetchall()
    duration = float(row.duration_s)
    try:
        path, _ = track_path(svc, track_id)
        peaks = waveform(svc, track_id, path)
    except Exception as exc:  # a missing or unreadable file still shows the page
        log.warning("no waveform for track %s: %s", track_id, exc)
        peaks = np.zeros(200)
    marks = [(float(a), float(b)) for a, b in cited]
    moments = [
        {
            "start": g.start_s, "end": g.end_s, "range": describe.time_range(g.start_s, g.end_s),
            "key": describe.key_name({"key_index": g.key_index, "mode": g.mode}) or "",
            "tempo": f"{g.tempo_bpm:.0f} BPM" if g.tempo_bpm else "",
            "cited": any(min(g.end_s, b) - max(g.start_s, a) >= 5.0 for a, b in marks),
        }
        for g in segs
    ]  # fmt: skip
    return {
        "track": _shown(row),
        "timeline": Markup(timeline_svg(peaks=peaks, duration_s=duration, marks=marks)),
        "moments": moments,
        "cited": [{"start": a, "end": b, "range": describe.time_range(a, b)} for a, b in marks],
    }  # fmt: skip


@get("/tracks/{track_id:int}", include_in_schema=False)
async def track_page(svc: Services, track_id: int) -> Template:
    ctx = await anyio.to_thread.run_sync(_track_context, svc, track_id)
    return Template("track.html", context=ctx)


HANDLERS = [library_page, track_page]
