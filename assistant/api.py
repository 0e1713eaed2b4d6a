"""The JSON API: ``POST /api/search`` (same JSON as ``cadenza search --json``), ``POST /api/chat`` and
the chat's refinements.

Thin controllers: decode the body into its typed struct (:mod:`assistant.api_types`), call the
service in a worker thread, answer with a typed struct, so the OpenAPI document carries both.
"""

from __future__ import annotations

import math
import uuid
from functools import partial

import anyio
import msgspec
from litestar import Request, Response, delete

from assistant import context as acontext
from assistant import conversations, explain, services
from assistant.api_answers import (
    ChatAnswer,
    ChatPathReply,
    ChatRefusal,
    ExplanationBody,
    LeftOut,
    PathResponse,
    SearchAnswer,
    StoredRequest,
    answer,
)
from assistant.api_types import (
    ID_LIMIT,
    ChatBody,
    ChatForm,
    ContextChange,
    PutBackBody,
    SearchBody,
    SearchForm,
    aspects_of,
    context_of_text,
    filters_of,
    moment_of,
    switches_of,
)
from assistant.bodies import api_post, decode_form, decode_json
from assistant.exclusions import put_back
from assistant.followup_schema import FollowUp
from assistant.forms import clip_and_form, clip_from_form, is_multipart, known_listener, listener_cookies
from assistant.querystate import state_from_json, state_of_json
from assistant.services import Clip, Message, Services
from cadenza.errors import InputError
from retrieval.types import DEFAULT_DIVERSITY, Aspects, SearchRequest


def _local_hour(request: Request, local_time: str | None) -> float | None:
    """The listener's local hour: ``local_time`` in the body, else the X-Local-Time / X-Timezone headers."""
    return acontext.local_hour(
        local_time=local_time if local_time not in (None, "") else request.headers.get("x-local-time"),
        timezone=request.headers.get("x-timezone"),
    )


async def _search_request(request: Request, svc: Services) -> SearchRequest:
    """The search a JSON body (a library moment) or a multipart form (a clip) asks for."""
    if is_multipart(request):
        clip, f = await clip_and_form(
            request, SearchForm, missing="attach the clip in the multipart field 'file'"
        )
        # 0 is refused, not read as "unset"; the default is one moment of the encoder.
        windowing = svc.embedder.windowing
        duration = windowing.window_s if f.duration is None else f.duration
        lo, hi = svc.settings.limits.min_clip_seconds, windowing.max_s
        if not lo <= duration <= hi:
            raise InputError(f"duration must be between {lo:g} and {hi:g} seconds")
        context = acontext.switches(switches_of(context_of_text(f.context)))
        hour = _local_hour(request, f.local_time)
        filters = f.filters()
        audio = await anyio.to_thread.run_sync(svc.decode, clip)
        return SearchRequest(
            audio=audio, start_s=f.start, duration_s=duration, k=f.k, filters=filters, route=f.route,
            diversity=DEFAULT_DIVERSITY if f.diversity is None else f.diversity,
            aspects=aspects_of(f.aspects()) or Aspects(), context=context, local_hour=hour,
            listener_id=known_listener(request),
        )  # fmt: skip
    body = decode_json(await request.body(), SearchBody)
    if body.reference is None:
        raise InputError(
            "give a reference moment {track_id, start}, or send the clip as multipart field 'file'"
        )
    return SearchRequest(
        moments=(moment_of(body.reference, "reference"),), k=body.k, filters=filters_of(body.filters),
        diversity=DEFAULT_DIVERSITY if body.diversity is None else body.diversity,
        aspects=aspects_of(body.aspects) or Aspects(), context=acontext.switches(switches_of(body.context)),
        local_hour=_local_hour(request, body.local_time), listener_id=known_listener(request),
    )  # fmt: skip


@api_post(
    "/api/search",
    tag="search",
    body=SearchBody,
    form=SearchForm,
    summary="Find moments like a clip or a library moment",
    description=(
        "Multipart: the clip in field `file`, with optional `start`, `duration`, `k`, repeatable `composer`, "
        "`exclude_composer`, `era`, `exclude_era`, `key`, `mode`, `min_bpm`, `max_bpm`, `route` (auto | "
        "melody | audio: a hum or single line is searched by melody in any key), `diversity` (0-1), "
        "`aspect_sound`/`aspect_harmony`/`aspect_rhythm`/`aspect_melody` (0-10), `context` (JSON text) and "
        "`local_time`. Or JSON: {reference: {track_id, start}, k, filters, diversity, aspects: {sound, harmony, "
        "rhythm, melody}, context?: {time_of_day, history, mood} (booleans, default true), local_time?: 'HH:MM' or "
        "ISO 8601}. The local time may instead come as header X-Local-Time, or X-Timezone (an IANA name). Each "
        "result has `match` (probability it is the same passage), `likeness` (0-100 against the library) and "
        "`also_at` (other starts, seconds, where its passage plays again in its track; empty unless it is the "
        "query's own passage). "
        "Returns the same JSON as `cadenza search --json`; query.context reports each context signal: on, applied, "
        "text, changed_ranks, brought_in. History applies when the client sends the page's listener cookie."
    ),
)
async def api_search(request: Request, svc: Services) -> SearchAnswer:
    req = await _search_request(request, svc)
    return answer(await anyio.to_thread.run_sync(svc.search_json, req), SearchAnswer)


async def _chat_body(request: Request) -> tuple[ChatBody, Clip | None]:
    """A chat message as the JSON body says it, or the multipart form with its clip."""
    if not is_multipart(request):
        return decode_json(await request.body(), ChatBody), None
    form = await request.form()
    clip = await clip_from_form(form)
    f = decode_form(form, ChatForm)
    body = ChatBody(
        message=f.message or f.text, conversation_id=f.conversation_id, k=f.k, start=f.start,
        diversity=f.diversity, aspects=f.aspects(), context=context_of_text(f.context), local_time=f.local_time,
    )  # fmt: skip
    return body, clip


@api_post(
    "/api/chat",
    tag="chat",
    body=ChatBody,
    form=ChatForm,
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
)
async def api_chat(request: Request, svc: Services) -> Response[ChatAnswer | ChatRefusal | ChatPathReply]:
    body, clip = await _chat_body(request)
    aspects = aspects_of(body.aspects)
    hour = _local_hour(request, body.local_time)
    overrides = switches_of(body.context)
    cid = conversations.parse_id(body.conversation_id) if body.conversation_id else None
    if body.start is not None and not math.isfinite(body.start):
        raise InputError("start must be a number of seconds ≥ 0")
    reference = moment_of(body.reference, "reference") if body.reference is not None else None
    state = state_from_json(msgspec.to_builtins(body.state)) if body.state is not None else None
    if state is not None and cid is None:
        raise InputError("a state edits a conversation's search: send its conversation_id too")
    lid, cookies = listener_cookies(request, svc)
    msg = Message(
        conversation_id=cid, text=body.message or "", clip=clip, start_s=body.start, k=body.k, reference=reference,
        listener_id=lid, state=state, diversity=body.diversity, aspects=aspects, local_hour=hour,
    )  # fmt: skip
    result = await anyio.to_thread.run_sync(partial(acontext.run_turn, svc, msg, overrides=overrides))
    reply: ChatAnswer | ChatRefusal | ChatPathReply
    if result.refused:
        note = await anyio.to_thread.run_sync(
            partial(conversations.turn, svc.db, result.conversation_id, result.note_id or 0)
        )
        reply = ChatRefusal(
            conversation_id=str(result.conversation_id), message_id=result.note_id, parser=result.parser,
            refused=True, reply=note.content, refined=False,
            state=state_of_json(result.turn.request) if result.turn.request else None,
        )  # fmt: skip
    elif result.turn.meta.get("path") is not None:  # "a path from #1 to #4": a reply with the path
        reply = ChatPathReply(
            conversation_id=str(result.conversation_id), message_id=result.note_id, parser=result.parser,
            reply=result.turn.content, path=answer({"steps": result.turn.meta["path"]}, PathResponse),
            refused=False, refined=False,
        )  # fmt: skip
    else:
        reply = await _explained(
            svc, result.conversation_id, result.turn, parser=result.parser, refined=result.refined
        )
    return Response(reply, cookies=cookies)


def _explain_and_store(svc: Services, turn: conversations.Turn) -> explain.Explanation:
    assert turn.response is not None
    expl = explain.explain(turn.response, llm=svc.llm)
    conversations.store_explanation(svc.db, turn, expl)
    return expl


async def _explained(
    svc: Services, conversation_id: uuid.UUID, turn: conversations.Turn, *, parser: str | None, refined: bool
) -> ChatAnswer:
    """Explain the answer ``turn``, store the explanation, and return the chat answer."""
    assert turn.response is not None
    expl = await anyio.to_thread.run_sync(_explain_and_store, svc, turn)
    return ChatAnswer(
        conversation_id=str(conversation_id), message_id=turn.id, parser=parser,
        followup=answer(turn.followup, FollowUp) if turn.followup is not None else None,
        request=answer(turn.request, StoredRequest) if turn.request is not None else None,
        response=answer(services.without_paths(turn.response), SearchAnswer),
        excluded=answer(turn.meta.get("excluded") or [], list[LeftOut]), state=state_of_json(turn.request or {}),
        state_notes=turn.meta.get("state_notes") or [], filter_reason=turn.meta.get("filter_reason"),
        explanation=answer(expl.to_json(), ExplanationBody), refined=refined, refused=False,
    )  # fmt: skip


@api_post(
    "/api/chat/put-back",
    tag="chat",
    body=PutBackBody,
    summary="Undo 'not #3': put a left-out track back into an answer",
    description=(
        "JSON: {conversation_id, message_id, track_id}. The answer `message_id` is searched again with the track "
        "allowed back in and explained afresh. Returns the same body as /api/chat."
    ),
)
async def api_put_back(request: Request, svc: Services) -> ChatAnswer:
    body = decode_json(await request.body(), PutBackBody)
    cid = conversations.parse_id(body.conversation_id)
    if not (body.message_id < ID_LIMIT and body.track_id < ID_LIMIT):
        raise InputError("message_id and track_id must be ids (whole numbers)")
    turn = await anyio.to_thread.run_sync(
        partial(put_back, svc, conversation_id=cid, message_id=body.message_id, track_id=body.track_id)
    )
    return await _explained(svc, cid, turn, parser=None, refined=True)


@delete(
    "/api/conversations/{conversation_id:str}",
    status_code=204,
    summary="Delete a conversation with its messages, searches and kept query clips",
    tags=["chat"],
)
async def api_delete_conversation(svc: Services, conversation_id: str) -> None:
    cid = conversations.parse_id(conversation_id)
    await anyio.to_thread.run_sync(services.delete_conversation, svc, cid)


@api_post(
    "/api/chat/context",
    tag="chat",
    summary="Turn listening-context signals (time of day, history, mood) on or off for a conversation",
    description=(
        "JSON: {conversation_id, message_id, context: {time_of_day?, history?, mood?}}. The switches are kept for the "
        "conversation and the answer `message_id` is ranked again with them (its local time unchanged, so a signal "
        "switched off gives exactly the ranking without it) and explained afresh. Returns the same body as /api/chat."
    ),
)
async def api_chat_context(data: ContextChange, svc: Services) -> ChatAnswer:
    cid = conversations.parse_id(data.conversation_id)
    if not 0 < data.message_id < ID_LIMIT:
        raise InputError("message_id must be a message id (a whole number)")
    changes = data.context.changes()
    if not changes:
        raise InputError('context names no signal to switch; e.g. {"time_of_day": false}')
    turn = await anyio.to_thread.run_sync(
        partial(acontext.rerank_with, svc, conversation_id=cid, message_id=data.message_id, changes=changes)
    )
    return await _explained(svc, cid, turn, parser=None, refined=True)


HANDLERS = [api_search, api_chat, api_put_back, api_delete_conversation, api_chat_context]
