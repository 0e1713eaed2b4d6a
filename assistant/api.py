"""The JSON API: ``POST /api/search`` (same JSON as ``cadenza search --json``) and ``POST /api/chat``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeGuard

import anyio
from litestar import Request, Response, delete, post

from assistant import chat, conversations, explain, services
from assistant import context as acontext
from assistant.followup_schema import KEYS
from assistant.querystate import state_from_json, state_of_json
from assistant.services import Services
from assistant.web import (
    _float_or_none,
    _int_or_none,
    aspects_of,
    aspects_of_form,
    clip_from_form,
    diversity_of,
    listener_cookies,
    listener_of,
)
from cadenza.errors import InputError
from retrieval.types import DEFAULT_DIVERSITY, DEFAULT_K, MAX_K, Aspects, Filters, MomentRef, SearchRequest


def _filters(f: dict[str, Any] | None) -> Filters:
    if not f:
        return Filters()
    if not isinstance(f, dict):
        raise InputError('filters must be an object, e.g. {"eras": ["Baroque"]}')
    allowed = {
        "composers",
        "exclude_composers",
        "eras",
        "exclude_eras",
        "exclude_tracks",
        "key",
        "mode",
        "min_bpm",
        "max_bpm",
    }
    unknown = set(f) - allowed
    if unknown:
        raise InputError(f"unknown filter(s) {sorted(unknown)}; use {sorted(allowed)}")
    kw: dict[str, Any] = {}
    for k, v in f.items():
        if v is None:
            continue
        if k in ("mode",):
            if v not in ("major", "minor"):
                raise InputError("filters.mode must be 'major' or 'minor'")
            kw[k] = v
        elif k == "key":
            if v not in KEYS:
                raise InputError(f"filters.key must be a tonic, one of {', '.join(KEYS)}")
            kw[k] = v
        elif k in ("min_bpm", "max_bpm"):
            try:
                kw[k] = float(v)
            except (TypeError, ValueError):
                raise InputError(f"filters.{k} must be a number of beats per minute") from None
            if not math.isfinite(kw[k]):
                raise InputError(f"filters.{k} must be a finite number")
        elif k == "exclude_tracks":
            if not isinstance(v, list) or not all(whole_number(x) and 0 < x < 2**63 for x in v):
                raise InputError("filters.exclude_tracks must be a list of track ids")
            kw[k] = tuple(v)
        else:
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise InputError(f"filters.{k} must be a list of names")
            kw[k] = tuple(v)
    return Filters(**kw)


def form_filters(form: Any) -> Filters:
    """The filters of a multipart search: repeatable composer/exclude_composer/era/exclude_era, key, mode,
    min_bpm, max_bpm — checked as the JSON form checks them."""

    def names(field: str) -> list[str]:
        return [str(v) for v in form.getall(field, []) if v not in (None, "")]

    data: dict[str, Any] = {
        "composers": names("composer"),
        "exclude_composers": names("exclude_composer"),
        "eras": names("era"),
        "exclude_eras": names("exclude_era"),
    }
    for field in ("key", "mode"):
        if form.get(field) not in (None, ""):
            data[field] = str(form.get(field))
    for field in ("min_bpm", "max_bpm"):
        if form.get(field) not in (None, ""):
            data[field] = _float_or_none(form.get(field), field)
    return _filters({k: v for k, v in data.items() if v not in ([], None)})


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InputError(
            "the request body is not valid JSON; send JSON or a multipart form with the clip in 'file'"
        ) from None
    except RecursionError:  # '[' * 5000: the decoder recurses once per level
        raise InputError("the JSON body is nested too deeply; send a flat object") from None
    if not isinstance(data, dict):
        raise InputError("the JSON body must be an object")
    return data


def whole_number(value: Any) -> TypeGuard[int]:
    """A JSON integer: ``true`` and ``1.9`` are not (Python counts bools as ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _moment(data: Any) -> MomentRef:
    if not isinstance(data, dict) or "track_id" not in data:
        raise InputError("reference must be an object {track_id, start}")
    start = data.get("start", 0.0)
    if not whole_number(data["track_id"]) or isinstance(start, bool) or not isinstance(start, int | float):
        raise InputError(
            "reference.track_id must be a whole number (a track id) and reference.start a number of seconds"
        )
    try:
        ref = MomentRef(track_id=int(data["track_id"]), start_s=float(start))
    except (TypeError, ValueError, OverflowError):
        raise InputError(
            "reference.track_id must be an integer and reference.start a number of seconds"
        ) from None
    if not 0 < ref.track_id < 2**63 or not math.isfinite(ref.start_s) or ref.start_s < 0:
        raise InputError("reference.track_id must be a track id and reference.start a number of seconds ≥ 0")
    return ref


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


def _form_context(raw: Any) -> Any:
    """A multipart ``context`` field: the same object as JSON text (absent = None)."""
    if raw in (None, ""):
        return None
    try:
        return json.loads(str(raw))
    except ValueError:
        raise InputError('the context field must be JSON, e.g. {"time_of_day": false}') from None


def _local_hour(request: Request, local_time: Any) -> float | None:
    """The listener's local hour: ``local_time`` in the body, else the X-Local-Time / X-Timezone headers."""
    return acontext.local_hour(
        local_time=local_time if local_time not in (None, "") else request.headers.get("x-local-time"),
        timezone=request.headers.get("x-timezone"),
    )


def _listener(request: Request) -> str | None:
    """The listener of the cookie, if the client has one (the search API never sets it)."""
    lid, new = listener_of(request)
    return None if new else lid


@post(
    "/api/search",
    status_code=200,
    summary="Find moments like a clip or a library moment",
    description=(
        "Multipart: the clip in field `file`, with optional `start`, `duration`, `k`, repeatable `composer`, "
        "`exclude_composer`, `era`, `exclude_era`, `key`, `mode`, `min_bpm`, `max_bpm`, `route` (auto | "
        "melody | audio: a hum or single line is searched by melody in any key), `diversity` (0-1), "
        "`aspect_sound`/`aspect_harmony`/`aspect_rhythm`/`aspect_melody` (0-10), `context` (JSON text) and "
        "`local_time`. Or JSON: {reference: {track_id, start}, k, filters, diversity, aspects: {sound, harmony, "
        "rhythm, melody}, context?: {time_of_day, history, mood} (booleans, default true), local_time?: 'HH:MM' or "
        "ISO 8601}. The local time may instead come as header X-Local-Time, or X-Timezone (an IANA name). Each "
        "result has `match` (probability it is the same passage) and `likeness` (0-100 against the library). "
        "Returns the same JSON as `cadenza search --json`; query.context reports each context signal: on, applied, "
        "text, changed_ranks, brought_in. History applies when the client sends the page's listener cookie."
    ),
    tags=["search"],
)
async def api_search(request: Request, svc: Services) -> dict[str, Any]:
    if _is_multipart(request):
        form = await request.form()
        clip = await clip_from_form(form)
        if clip is None:
            raise InputError("attach the clip in the multipart field 'file'")
        duration = _float_or_none(form.get("duration"), "duration")
        # 0 is refused below, not read as "unset"; the default is one moment of the encoder (10 s).
        windowing = svc.embedder.windowing
        duration = windowing.window_s if duration is None else duration
        lo, hi = svc.settings.limits.min_clip_seconds, windowing.max_s
        if not lo <= duration <= hi:
            raise InputError(f"duration must be between {lo:g} and {hi:g} seconds")
        ctx = acontext.switches(_form_context(form.get("context")))
        hour = _local_hour(request, form.get("local_time"))
        audio = await anyio.to_thread.run_sync(svc.decode, clip)
        req = SearchRequest(
            audio=audio,
            start_s=_float_or_none(form.get("start"), "start"),
            duration_s=duration,
            k=_int_or_none(form.get("k"), "k") or DEFAULT_K,
            filters=form_filters(form),
            route=str(form.get("route") or "auto"),
            diversity=_or(diversity_of(form.get("diversity")), DEFAULT_DIVERSITY),
            aspects=aspects_of_form(form) or Aspects(),
            context=ctx,
            local_hour=hour,
            listener_id=_listener(request),
        )
    else:
        data = await _json_body(request)
        if "reference" not in data:
            raise InputError(
                "give a reference moment {track_id, start}, or send the clip as multipart field 'file'"
            )
        k = data.get("k", DEFAULT_K)
        if not whole_number(k) or not 1 <= k <= MAX_K:
            raise InputError(f"k must be a whole number between 1 and {MAX_K}")
        req = SearchRequest(
            moments=(_moment(data["reference"]),), k=k, filters=_filters(data.get("filters")),
            diversity=_or(diversity_of(data.get("diversity")), DEFAULT_DIVERSITY),
            aspects=aspects_of(data.get("aspects")) or Aspects(),
            context=acontext.switches(data.get("context")), local_hour=_local_hour(request, data.get("local_time")),
            listener_id=_listener(request),
        )  # fmt: skip
    return await anyio.to_thread.run_sync(svc.search_json, req)


@post(
    "/api/chat",
    status_code=200,
    summary="One chat message: a clip, a named moment, or a follow-up; returns results and the explanation",
    description=(
        "JSON: {message, conversation_id?, reference?: {track_id, start}, k?, diversity?, aspects?, context?: "
        "{time_of_day, history, mood}, local_time?}. Multipart: the clip in `file` with optional `message`, "
        "`conversation_id`, `start`, `k`, `diversity`, `aspect_*`, `context` (JSON text), `local_time`. "
        "`diversity` (0-1) and `aspects` ({sound, harmony, rhythm, melody}, 0-10) apply to this answer and stay "
        "with the conversation's later refinements; a `context` given is kept for the rest of the conversation; "
        "the local time may come as header X-Local-Time or X-Timezone. A message without a clip refines the conversation's "
        "last search ('only Baroque', 'like #2 but not #3') or names a moment ('find moments like 1:23 of <title>'). "
        "A message that only takes results out ('not #3', 'drop the second') refines that answer in place "
        "(`refined` true, `message_id` is the refined answer, `excluded` lists what is left out). "
        "A JSON `state` (as returned in `state`, edited) with `conversation_id` searches exactly that state. "
        "A message that is not understood, or names a composer ambiguously, is answered without a search "
        "(`refused` true, `reply` says why and what can be asked). "
        "Returns {conversation_id, message_id, parser, followup, request, response, excluded, refined, refused, "
        "state, state_notes, filter_reason, explanation}."
    ),
    tags=["chat"],
)
async def api_chat(request: Request, svc: Services) -> Response[dict[str, Any]]:
    clip = None
    if _is_multipart(request):
        form = await request.form()
        clip = await clip_from_form(form)
        data: dict[str, Any] = {
            "message": form.get("message") or form.get("text") or "",
            "conversation_id": form.get("conversation_id") or None,
            "k": _int_or_none(form.get("k"), "k"),
            "start": _float_or_none(form.get("start"), "start"),
            "diversity": form.get("diversity"),
            "context": _form_context(form.get("context")),
            "local_time": form.get("local_time"),
        }
        aspects = aspects_of_form(form)
    else:
        data = await _json_body(request)
        aspects = aspects_of(data.get("aspects"))
    hour = _local_hour(request, data.get("local_time"))
    overrides = data.get("context")
    acontext.switches(overrides)  # a bad context object fails before any work
    cid = conversations.parse_id(str(data["conversation_id"])) if data.get("conversation_id") else None
    k = data.get("k")
    if k is not None and (not whole_number(k) or not 1 <= k <= MAX_K):
        raise InputError(f"k must be a whole number between 1 and {MAX_K}")
    start = data.get("start")
    if start is not None and (
        isinstance(start, bool) or not isinstance(start, int | float) or not 0 <= start < math.inf
    ):
        raise InputError("start must be a number of seconds ≥ 0")
    reference = _moment(data["reference"]) if data.get("reference") else None
    state = state_from_json(data["state"]) if data.get("state") is not None else None
    if state is not None and cid is None:
        raise InputError("a state edits a conversation's search: send its conversation_id too")
    lid, cookies = listener_cookies(request, svc)
    result = await anyio.to_thread.run_sync(
        partial(
            acontext.run_turn, svc, overrides=overrides, conversation_id=cid, text=str(data.get("message") or ""),
            clip=clip, start_s=data.get("start"), k=k, reference=reference, listener_id=lid, state=state,
            diversity=diversity_of(data.get("diversity")), aspects=aspects, local_hour=hour,
        )
    )  # fmt: skip
    if result.refused:
        note = await anyio.to_thread.run_sync(
            partial(conversations.turn, svc.db, result.conversation_id, result.note_id or 0)
        )
        body = {
            "conversation_id": str(result.conversation_id),
            "message_id": result.note_id,
            "parser": result.parser,
            "refused": True,
            "reply": note.content,
            "refined": False,
            "state": state_of_json(result.turn.request).to_json() if result.turn.request else None,
        }
        return Response(body, cookies=cookies)
    if result.turn.meta.get("path") is not None:  # "a path from #1 to #4": a reply with the path
        body = {
            "conversation_id": str(result.conversation_id), "message_id": result.note_id, "parser": result.parser,
            "reply": result.turn.content, "path": {"steps": result.turn.meta["path"]}, "refused": False,
            "refined": False,
        }  # fmt: skip
        return Response(body, cookies=cookies)
    body = await _explained(svc, result.conversation_id, result.turn, parser=result.parser)
    body["refined"] = result.refined
    body["refused"] = False
    return Response(body, cookies=cookies)


async def _explained(
    svc: Services, conversation_id: Any, turn: conversations.Turn, *, parser: str | None
) -> dict[str, Any]:
    """Explain the answer ``turn``, store the explanation, and return the chat JSON body."""
    assert turn.response is not None
    expl = await anyio.to_thread.run_sync(partial(explain.explain, turn.response, llm=svc.llm))
    meta = {"notice": expl.notice, "notes": expl.notes, "flags": expl.flags, "used_llm": expl.used_llm}
    n = len(turn.response.get("results") or [])
    await anyio.to_thread.run_sync(
        partial(
            conversations.save_explanation, svc.db, turn.id, markdown=expl.markdown, meta=meta,
            cited=list(explain.citations_in(expl.markdown, n)),
        )
    )  # fmt: skip
    return {
        "conversation_id": str(conversation_id),
        "message_id": turn.id,
        "parser": parser,
        "followup": turn.followup,
        "request": turn.request,
        "response": services.without_paths(turn.response),
        "excluded": turn.meta.get("excluded") or [],
        "state": state_of_json(turn.request or {}).to_json(),
        "state_notes": turn.meta.get("state_notes") or [],
        "filter_reason": turn.meta.get("filter_reason"),
        "explanation": expl.to_json(),
    }


@post(
    "/api/chat/put-back",
    status_code=200,
    summary="Undo 'not #3': put a left-out track back into an answer",
    description=(
        "JSON: {conversation_id, message_id, track_id}. The answer `message_id` is searched again with the track "
        "allowed back in and explained afresh. Returns the same body as /api/chat."
    ),
    tags=["chat"],
)
async def api_put_back(request: Request, svc: Services) -> dict[str, Any]:
    from assistant import exclusions

    data = await _json_body(request)
    cid = conversations.parse_id(str(data.get("conversation_id") or ""))
    mid, tid = data.get("message_id"), data.get("track_id")
    if not (whole_number(mid) and whole_number(tid) and 0 < mid < 2**63 and 0 < tid < 2**63):
        raise InputError("message_id and track_id must be ids (whole numbers)")
    turn = await anyio.to_thread.run_sync(
        partial(exclusions.put_back, svc, conversation_id=cid, message_id=mid, track_id=tid)
    )
    body = await _explained(svc, cid, turn, parser=None)
    body["refined"] = True
    return body


@delete(
    "/api/conversations/{conversation_id:str}",
    status_code=204,
    summary="Delete a conversation with its messages, searches and kept query clips",
    tags=["chat"],
)
async def api_delete_conversation(svc: Services, conversation_id: str) -> None:
    cid = conversations.parse_id(conversation_id)
    await anyio.to_thread.run_sync(chat.delete_conversation, svc, cid)


@dataclass
class ContextSwitches:
    """Listening-context switches to change; a signal left out (null) keeps its setting."""

    time_of_day: bool | None = None
    history: bool | None = None
    mood: bool | None = None


@dataclass
class ContextChange:
    """Switch context signals for a conversation and rank one of its answers again with them."""

    conversation_id: str
    message_id: int
    context: ContextSwitches


@post(
    "/api/chat/context",
    status_code=200,
    summary="Turn listening-context signals (time of day, history, mood) on or off for a conversation",
    description=(
        "JSON: {conversation_id, message_id, context: {time_of_day?, history?, mood?}}. The switches are kept for the "
        "conversation and the answer `message_id` is ranked again with them (its local time unchanged, so a signal "
        "switched off gives exactly the ranking without it) and explained afresh. Returns the same body as /api/chat."
    ),
    tags=["chat"],
)
async def api_chat_context(data: ContextChange, svc: Services) -> dict[str, Any]:
    cid = conversations.parse_id(data.conversation_id)
    if not 0 < data.message_id < 2**63:
        raise InputError("message_id must be a message id (a whole number)")
    changes = {k: v for k, v in vars(data.context).items() if v is not None}
    if not changes:
        raise InputError('context names no signal to switch; e.g. {"time_of_day": false}')
    turn = await anyio.to_thread.run_sync(
        partial(acontext.rerank_with, svc, conversation_id=cid, message_id=data.message_id, changes=changes)
    )
    body = await _explained(svc, cid, turn, parser=None)
    body["refined"] = True
    return body


HANDLERS = [api_search, api_chat, api_put_back, api_delete_conversation, api_chat_context]
