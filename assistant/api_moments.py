"""The JSON API of moment maps and moment paths: ``POST /api/map`` and ``POST /api/path``.

Thin controllers with typed request/response structs (so the OpenAPI document carries real
types); the work is :mod:`retrieval.moment_map` and :mod:`retrieval.moment_path`.
"""

from __future__ import annotations

from functools import partial

import anyio
import numpy as np
from litestar import Request

from assistant.api_answers import MapResponse, MapTrack, MapWindow, PathResponse, PathStep
from assistant.api_types import MapBody, MapForm, PathRequest, moment_of
from assistant.bodies import api_post, decode_json
from assistant.forms import clip_and_form, is_multipart
from assistant.services import SR, Services
from cadenza.errors import InputError
from retrieval.moment_map import MAX_MAP_TRACKS, Strip, clip_span, moment_map
from retrieval.moment_path import MAX_STEPS, MIN_STEPS, moment_path
from retrieval.types import SearchRequest


def _strip_part(audio: np.ndarray, start_s: float | None) -> np.ndarray:
    """The part of an upload its own strip covers (a long one: MAX_CLIP_STRIP_S around ``start``)."""
    seconds = audio.size / SR
    at = start_s if start_s is not None else seconds / 2
    lo, hi = clip_span(seconds=seconds, start_s=at, end_s=at + 10.0)
    return audio[int(lo * SR) : int(hi * SR)]


def _map_response(strips: list[Strip]) -> MapResponse:
    return MapResponse(
        tracks=[
            MapTrack(
                track_id=s.track_id, title=s.title, duration_s=round(s.duration_s, 2), own=s.own,
                windows=[MapWindow(start=a, likeness=v) for a, v in zip(s.starts, s.likeness, strict=True)],
            )
            for s in strips
        ]
    )  # fmt: skip


@api_post(
    "/api/map",
    tag="listening",
    body=MapBody,
    form=MapForm,
    summary="Moment map: how alike every 10-s window of the reference's own track and the nearest tracks is",
    description=(
        'JSON: {"reference": {"track_id", "start"}, "tracks": 5}. Or multipart: a clip in field `file` with '
        "optional `start` and `tracks`. Returns {tracks: [{track_id, title, duration_s, own, windows: "
        "[{start, likeness}]}]}, the reference's own track first (for a clip: the clip itself, track_id null, "
        "at most 120 s of it); likeness is the embedding cosine in [0, 1]."
    ),
)
async def api_map(request: Request, svc: Services) -> MapResponse:
    if is_multipart(request):
        clip, f = await clip_and_form(
            request,
            MapForm,
            missing="attach the clip in the multipart field 'file', or send JSON with a reference",
        )
        n = f.tracks
        audio = await anyio.to_thread.run_sync(svc.decode, clip)
        req = SearchRequest(audio=audio, start_s=f.start)
        own_audio = _strip_part(audio, req.start_s)
    else:
        body = decode_json(
            await request.body(),
            MapBody,
            not_json="the request body is not valid JSON; send JSON or a multipart form with 'file'",
        )
        n = body.tracks
        req = SearchRequest(moments=(moment_of(body.reference, "reference"),))
        own_audio = None
    if not 1 <= n <= MAX_MAP_TRACKS:
        raise InputError(f"tracks must be between 1 and {MAX_MAP_TRACKS}")
    strips = await anyio.to_thread.run_sync(
        partial(moment_map, db=svc.db, embedder=svc.embedder, request=req, n_tracks=n, own_audio=own_audio)
    )
    return _map_response(strips)


@api_post(
    "/api/path",
    tag="listening",
    summary="Moment path: passages stepping from one library moment to another",
    description=(
        f'JSON: {{"from": {{"track_id", "start"}}, "to": {{"track_id", "start"}}, "steps": N}} ({MIN_STEPS}–{MAX_STEPS}). '
        "Returns {steps: [{track_id, start, end, title, likeness}]}: the first step is `from`, the last `to`, "
        "each in between close to the one before (likeness to it) and moving toward `to`."
    ),
)
async def api_path(data: PathRequest, svc: Services) -> PathResponse:
    if not MIN_STEPS <= data.steps <= MAX_STEPS:
        raise InputError(f"steps must be between {MIN_STEPS} and {MAX_STEPS}")
    a, b = moment_of(data.from_, "from"), moment_of(data.to, "to")
    steps = await anyio.to_thread.run_sync(
        partial(
            moment_path, db=svc.db, embedder=svc.embedder, start=(a.track_id, a.start_s), end=(b.track_id, b.start_s),
            steps=data.steps,
        )
    )  # fmt: skip
    return PathResponse(steps=[PathStep(**s.to_json()) for s in steps])


HANDLERS = [api_map, api_path]
