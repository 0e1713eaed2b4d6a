"""The JSON API of moment maps and moment paths: ``POST /api/map`` and ``POST /api/path``.

Thin controllers with typed request/response structs (so the OpenAPI document carries real
types); the work is :mod:`retrieval.moment_map` and :mod:`retrieval.moment_path`.
"""

from __future__ import annotations

from functools import partial

import anyio
import msgspec
import numpy as np
from litestar import Request, post

from assistant.services import SR, Services
from assistant.web import _float_or_none, _int_or_none, clip_from_form
from cadenza.errors import InputError
from retrieval.moment_map import DEFAULT_MAP_TRACKS, MAX_MAP_TRACKS, clip_span, moment_map
from retrieval.moment_path import MAX_STEPS, MIN_STEPS, moment_path
from retrieval.types import MomentRef, SearchRequest


class Moment(msgspec.Struct):
    """A library moment: the 10 s of track ``track_id`` from ``start`` seconds."""

    track_id: int
    start: float = 0.0


class MapRequest(msgspec.Struct):
    reference: Moment
    tracks: int = DEFAULT_MAP_TRACKS  # other tracks drawn besides the reference's own


class MapWindow(msgspec.Struct):
    start: float
    likeness: float


class MapTrack(msgspec.Struct):
    track_id: int | None  # null: the uploaded clip itself
    title: str
    duration_s: float
    own: bool
    windows: list[MapWindow]


class MapResponse(msgspec.Struct):
    tracks: list[MapTrack]


class PathRequest(msgspec.Struct):
    from_: Moment = msgspec.field(name="from")
    to: Moment
    steps: int = 5


class PathStep(msgspec.Struct):
    track_id: int
    start: float
    end: float
    title: str
    likeness: float


class PathResponse(msgspec.Struct):
    steps: list[PathStep]


def _checked(m: Moment, name: str) -> MomentRef:
    if not 0 < m.track_id < 2**63 or not m.start == m.start or m.start < 0 or m.start == float("inf"):
        raise InputError(f"{name}.track_id must be a track id and {name}.start a number of seconds ≥ 0")
    return MomentRef(track_id=m.track_id, start_s=float(m.start))


def _strip_part(audio: np.ndarray, start_s: float | None) -> np.ndarray:
    """The part of an upload its own strip covers (a long one: MAX_CLIP_STRIP_S around ``start``)."""
    seconds = audio.size / SR
    at = start_s if start_s is not None else seconds / 2
    lo, hi = clip_span(seconds=seconds, start_s=at, end_s=at + 10.0)
    return audio[int(lo * SR) : int(hi * SR)]


def _map_response(strips: list) -> MapResponse:
    return MapResponse(
        tracks=[
            MapTrack(
                track_id=s.track_id, title=s.title, duration_s=round(s.duration_s, 2), own=s.own,
                windows=[MapWindow(start=a, likeness=v) for a, v in zip(s.starts, s.likeness, strict=True)],
            )
            for s in strips
        ]
    )  # fmt: skip


@post(
    "/api/map",
    status_code=200,
    summary="Moment map: how alike every 10-s window of the reference's own track and the nearest tracks is",
    description=(
        'JSON: {"reference": {"track_id", "start"}, "tracks": 5}. Or multipart: a clip in field `file` with '
        "optional `start` and `tracks`. Returns {tracks: [{track_id, title, duration_s, own, windows: "
        "[{start, likeness}]}]}, the reference's own track first (for a clip: the clip itself, track_id null, "
        "at most 120 s of it); likeness is the embedding cosine in [0, 1]."
    ),
    tags=["listening"],
)
async def api_map(request: Request, svc: Services) -> MapResponse:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()
        clip = await clip_from_form(form)
        if clip is None:
            raise InputError("attach the clip in the multipart field 'file', or send JSON with a reference")
        n = _int_or_none(form.get("tracks"), "tracks", hi=MAX_MAP_TRACKS) or DEFAULT_MAP_TRACKS
        audio = await anyio.to_thread.run_sync(svc.decode, clip)
        req = SearchRequest(audio=audio, start_s=_float_or_none(form.get("start"), "start"))
        own_audio = _strip_part(audio, req.start_s)
    else:
        try:
            data = msgspec.json.decode(await request.body() or b"{}", type=MapRequest)
        except msgspec.ValidationError as exc:
            raise InputError(
                f'bad map request ({exc}); send {{"reference": {{"track_id": 1, "start": 30}}}}'
            ) from None
        except msgspec.DecodeError:
            raise InputError(
                "the request body is not valid JSON; send JSON or a multipart form with 'file'"
            ) from None
        n = data.tracks
        req = SearchRequest(moments=(_checked(data.reference, "reference"),))
        own_audio = None
    if not 1 <= n <= MAX_MAP_TRACKS:
        raise InputError(f"tracks must be between 1 and {MAX_MAP_TRACKS}")
    strips = await anyio.to_thread.run_sync(
        partial(moment_map, db=svc.db, embedder=svc.embedder, request=req, n_tracks=n, own_audio=own_audio)
    )
    return _map_response(strips)


@post(
    "/api/path",
    status_code=200,
    summary="Moment path: passages stepping from one library moment to another",
    description=(
        f'JSON: {{"from": {{"track_id", "start"}}, "to": {{"track_id", "start"}}, "steps": N}} ({MIN_STEPS}–{MAX_STEPS}). '
        "Returns {steps: [{track_id, start, end, title, likeness}]}: the first step is `from`, the last `to`, "
        "each in between close to the one before (likeness to it) and moving toward `to`."
    ),
    tags=["listening"],
)
async def api_path(data: PathRequest, svc: Services) -> PathResponse:
    if not MIN_STEPS <= data.steps <= MAX_STEPS:
        raise InputError(f"steps must be between {MIN_STEPS} and {MAX_STEPS}")
    a, b = _checked(data.from_, "from"), _checked(data.to, "to")
    steps = await anyio.to_thread.run_sync(
        partial(
            moment_path, db=svc.db, embedder=svc.embedder, start=(a.track_id, a.start_s), end=(b.track_id, b.start_s),
            steps=data.steps,
        )
    )  # fmt: skip
    return PathResponse(steps=[PathStep(**s.to_json()) for s in steps])


HANDLERS = [api_map, api_path]
