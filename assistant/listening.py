"""Listening fragments (htmx): A/B of the query beside a match, and the moment map of an answer.

Thin controllers: read the stored answer, compute in a worker thread, render a partial. Both are
fetched only when a listener opens them, so an answer renders without decoding any library audio.
"""

from __future__ import annotations

import io
import logging
import uuid
from typing import Any

import anyio
import numpy as np
import soundfile as sf
from litestar import get
from litestar.response import Template
from markupsafe import Markup

from assistant import browse, clips, conversations, describe
from assistant.followups import request_from_json
from assistant.media import track_path
from assistant.pictures import moment_strip_svg, timeline_svg
from assistant.services import Services, load_passage
from cadenza.errors import NotFound
from retrieval.moment_map import moment_map

log = logging.getLogger(__name__)


def _track_peaks(svc: Services, track_id: int) -> tuple[np.ndarray, float]:
    """Whole-track waveform peaks (cached on disk by :func:`assistant.browse.waveform`) and duration."""
    path, duration = track_path(svc, track_id)
    return np.asarray(browse.waveform(svc, track_id, path)), duration


def query_side(svc: Services, turn: conversations.Turn) -> dict[str, Any] | None:
    """What the "A" of an A/B plays: the kept upload, or the library moment the search started from.

    None when there is nothing single to play (a blend of moments, or a clip that was not kept).
    """
    query = (turn.response or {}).get("query") or {}
    clip_id = turn.meta.get("clip_id")
    if clip_id:
        kept = clips.info(svc.db, clip_id)
        if kept is None:
            return None
        return {
            "src": f"/clips/{kept.id}", "start": kept.passage_start, "end": kept.passage_end,
            "label": "your clip", "peaks": np.asarray(kept.peaks), "duration": kept.duration_s,
        }  # fmt: skip
    if query.get("source") == "moment" and query.get("track_id") is not None:
        tid = int(query["track_id"])
        try:
            peaks, duration = _track_peaks(svc, tid)
        except NotFound:
            return None
        return {
            "src": f"/audio/{tid}", "start": float(query.get("start") or 0.0),
            "end": float(query.get("end") or 0.0), "label": query.get("title") or f"track {tid}",
            "peaks": peaks, "duration": duration,
        }  # fmt: skip
    return None


def ab_context(svc: Services, conversation_id: uuid.UUID, message_id: int, rank: int) -> dict[str, Any]:
    turn = conversations.turn(svc.db, conversation_id, message_id)
    results = (turn.response or {}).get("results") or []
    match = next((r for r in results if int(r.get("rank", 0)) == rank), None)
    if match is None:
        raise NotFound(f"answer {message_id} has no result #{rank}")
    a = query_side(svc, turn)
    if a is None:
        return {"available": False, "reason": "this answer has no single query clip to compare with"}
    try:
        m_peaks, m_duration = _track_peaks(svc, int(match["track_id"]))
    except NotFound:
        return {"available": False, "reason": "this track was removed from the library"}
    m_start, m_end = float(match["start"]), float(match["end"])
    return {
        "available": True,
        "rank": rank,
        "a": {
            **{k: a[k] for k in ("src", "start", "end", "label")},
            "range": describe.time_range(a["start"], a["end"]),
            "wave": Markup(
                timeline_svg(peaks=a["peaks"], duration_s=a["duration"], marks=[(a["start"], a["end"])], height=48)
            ),
        },
        "b": {
            "src": f"/audio/{int(match['track_id'])}", "start": m_start, "end": m_end,
            "label": match.get("title") or f"track {match['track_id']}",
            "range": describe.time_range(m_start, m_end),
            "wave": Markup(timeline_svg(peaks=m_peaks, duration_s=m_duration, marks=[(m_start, m_end)], height=48)),
        },
    }  # fmt: skip


@get("/c/{conversation_id:str}/m/{message_id:int}/ab/{rank:int}", include_in_schema=False)
async def ab_panel(svc: Services, conversation_id: str, message_id: int, rank: int) -> Template:
    """The A/B panel of one result: both waveforms, the matched regions marked, one toggle."""
    cid = conversations.parse_id(conversation_id)
    ctx = await anyio.to_thread.run_sync(ab_context, svc, cid, message_id, rank)
    return Template("_ab.html", context={"ab": ctx})


def kept_audio(svc: Services, clip_id: str) -> np.ndarray | None:
    """The kept query clip decoded (our own MP3, at 16 kHz mono), or None when it is gone."""
    try:
        data, _ = clips.audio_bytes(svc.db, clips.parse_id(clip_id))
    except NotFound:
        return None
    y, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return np.asarray(y.mean(axis=1), dtype=np.float32)


def map_context(svc: Services, conversation_id: uuid.UUID, message_id: int) -> dict[str, Any]:
    """The moment map of an answer: the query's own track (a library moment) and each result's track."""
    turn = conversations.turn(svc.db, conversation_id, message_id)
    if turn.request is None or turn.response is None:
        raise NotFound(f"message {message_id} has no search to map")
    audio = load_passage(svc.settings, turn.audio_ref) if turn.audio_ref else None
    request = request_from_json(turn.request, audio=audio)
    results = turn.response.get("results") or []
    tracks = list(dict.fromkeys(int(r["track_id"]) for r in results))
    clip_id = turn.meta.get("clip_id")
    kept = kept_audio(svc, clip_id) if clip_id and not request.moments else None
    strips = moment_map(db=svc.db, embedder=svc.embedder, request=request, tracks=tracks, own_audio=kept)
    rank_of: dict[int | None, int] = {int(r["track_id"]): int(r["rank"]) for r in results}
    every = [v for st in strips for v in st.likeness]
    scale = (min(every), max(every)) if every else (0.0, 1.0)
    rows = []
    for st in strips:
        top = sorted(range(len(st.likeness)), key=lambda i: -st.likeness[i])[:3]
        rows.append(
            {
                "track_id": st.track_id, "title": st.title, "own": st.own, "rank": rank_of.get(st.track_id),
                "key": st.track_id if st.track_id is not None else "clip",
                "src": f"/audio/{st.track_id}" if st.track_id is not None else f"/clips/{clip_id}",
                "href": f"/tracks/{st.track_id}" if st.track_id is not None else None,
                "svg": Markup(
                    moment_strip_svg(
                        starts=st.starts, likeness=st.likeness, duration_s=st.duration_s,
                        label=f"likeness along {st.title}", scale=scale,
                    )
                ),
                "peaks": [
                    {"start": st.starts[i], "at": describe.timestamp(st.starts[i]), "likeness": st.likeness[i]}
                    for i in sorted(top)
                ],
            }
        )  # fmt: skip
    return {"strips": rows, "message_id": message_id, "scale": scale}


@get("/c/{conversation_id:str}/m/{message_id:int}/map", include_in_schema=False)
async def map_panel(svc: Services, conversation_id: str, message_id: int) -> Template:
    """The moment map of one answer: a strip per track, clickable to play from that point."""
    cid = conversations.parse_id(conversation_id)
    ctx = await anyio.to_thread.run_sync(map_context, svc, cid, message_id)
    return Template("_map.html", context={"map": ctx})


HANDLERS = [ab_panel, map_panel]
