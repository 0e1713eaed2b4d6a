"""Browse: the library (search and filters) and a track page (waveform, cited moments, every moment)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
from litestar import get
from litestar.response import Template

from assistant import describe
from assistant.media import track_path
from assistant.services import Services, library_names
from cadenza.errors import NotFound

log = logging.getLogger(__name__)


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
    with svc.db.connection() as conn:
        rows = conn.execute(
            "SELECT t.id, t.title, t.composer, t.work, t.era, t.year, t.duration_s,"
            " (SELECT count(*) FROM segments s WHERE s.track_id = t.id)"
            f" FROM tracks t WHERE {' AND '.join(where)} ORDER BY t.composer, t.title, t.id LIMIT 500",
            args,
        ).fetchall()
    composers, eras = library_names(svc.db)
    tracks = [
        {"id": r[0], "title": r[1] or f"Track {r[0]}", "composer": r[2], "work": r[3], "era": r[4], "year": r[5],
         "duration": describe.timestamp(r[6]), "segments": r[7]}
        for r in rows
    ]  # fmt: skip
    return tracks, composers, eras


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


def waveform(svc: Services, track_id: int, path: Path) -> Any:
    """Peaks of the whole track, cached under CADENZA_HOME/cache/waveforms."""
    import numpy as np

    from assistant.pictures import waveform_peaks
    from cadenza.audio import load_audio

    cache = svc.settings.paths.cache / "waveforms"
    stat = path.stat()
    key = cache / f"{track_id}-{int(stat.st_mtime)}-{stat.st_size}.npy"
    if key.is_file():
        return np.load(key)
    y = load_audio(path=path, sr=4000)
    peaks = waveform_peaks(audio=y, bins=400)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(key, peaks)
    return peaks


def _track_context(svc: Services, track_id: int) -> dict[str, Any]:
    from markupsafe import Markup

    from assistant.pictures import timeline_svg

    with svc.db.connection() as conn:
        row = conn.execute(
            "SELECT id, title, composer, work, era, year, duration_s FROM tracks WHERE id = %s", (track_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no track {track_id} in the library")
        segs = conn.execute(
            "SELECT start_s, end_s, key_index, mode, tempo_bpm FROM segments WHERE track_id = %s ORDER BY start_s",
            (track_id,),
        ).fetchall()
        cited = conn.execute(
            "SELECT DISTINCT ON (round(start_s)) start_s, end_s FROM citations WHERE track_id = %s"
            " ORDER BY round(start_s), start_s",
            (track_id,),
        ).fetchall()
    duration = float(row[6])
    try:
        path, _ = track_path(svc, track_id)
        peaks = waveform(svc, track_id, path)
    except Exception as exc:  # a missing or unreadable file still shows the page
        log.warning("no waveform for track %s: %s", track_id, exc)
        import numpy as np

        peaks = np.zeros(200)
    marks = [(float(a), float(b)) for a, b in cited]
    moments = [
        {
            "start": float(s), "end": float(e), "range": describe.time_range(float(s), float(e)),
            "key": describe.key_name({"key_index": k, "mode": m}) or "", "tempo": f"{t:.0f} BPM" if t else "",
            "cited": any(min(float(e), b) - max(float(s), a) >= 5.0 for a, b in marks),
        }
        for s, e, k, m, t in segs
    ]  # fmt: skip
    return {
        "track": {"id": row[0], "title": row[1] or f"Track {row[0]}", "composer": row[2], "work": row[3],
                  "era": row[4], "year": row[5], "duration": describe.timestamp(duration)},
        "timeline": Markup(timeline_svg(peaks=peaks, duration_s=duration, marks=marks)),
        "moments": moments,
        "cited": [{"start": a, "end": b, "range": describe.time_range(a, b)} for a, b in marks],
    }  # fmt: skip


@get("/tracks/{track_id:int}", include_in_schema=False)
async def track_page(svc: Services, track_id: int) -> Template:
    ctx = await anyio.to_thread.run_sync(_track_context, svc, track_id)
    return Template("track.html", context=ctx)


HANDLERS = [library_page, track_page]
