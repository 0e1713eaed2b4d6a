"""HTML controllers: the chat page, posting a message, the explanation stream, plays.

Controllers are thin: parse the request, call :mod:`assistant.chat` in a worker thread (it does
blocking database and model work), render a template.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from html import escape
from typing import Any

import anyio
from litestar import Request, get, post
from litestar.datastructures import FormMultiDict
from litestar.response import Redirect, ServerSentEvent, Template
from litestar.response.sse import ServerSentEventMessage

from assistant import context as acontext
from assistant import conversations, exclusions, explain, services, statechips, views
from assistant.api_types import aspects_of
from assistant.bodies import decode_form
from assistant.forms import (
    ChipForm,
    MessageForm,
    SignalForm,
    TrackForm,
    clip_from_form,
    listener_cookies,
    listener_of,
)
from assistant.services import Message, Services
from cadenza.errors import InputError, NotFound
from retrieval.store import record_play as insert_play
from retrieval.types import DEFAULT_DIVERSITY, DEFAULT_K, MomentRef

log = logging.getLogger(__name__)


def _render_turns(
    svc: Services, conversation_id: uuid.UUID, turns: list[conversations.Turn]
) -> list[dict[str, Any]]:
    return [views.turn_context(svc.db, conversation_id, t) for t in turns]


# --- pages ----------------------------------------------------------------------------------------


@get("/", include_in_schema=False)
async def chat_page(request: Request, svc: Services) -> Template:
    lid, cookies = listener_cookies(request, svc)
    recent = await anyio.to_thread.run_sync(partial(conversations.recent, svc.db, lid))
    return Template(
        "chat.html",
        context={
            "conversation_id": "",
            "turns": [],
            "title": "",
            "recent": recent,
            "diversity_default": DEFAULT_DIVERSITY,
            "k_default": DEFAULT_K,
        },  # fmt: skip
        cookies=cookies,
    )


@get("/c/{conversation_id:str}", include_in_schema=False)
async def conversation_page(request: Request, svc: Services, conversation_id: str) -> Template:
    cid = conversations.parse_id(conversation_id)
    lid, cookies = listener_cookies(request, svc)

    def load() -> tuple[list[dict[str, Any]], str, float | None]:
        ts = conversations.turns(svc.db, cid)
        last = conversations.last_search(svc.db, cid)
        # The variety control shows what the conversation's last search used.
        diversity = (last.request or {}).get("diversity") if last is not None else None
        return _render_turns(svc, cid, ts), conversations.title(svc.db, cid), diversity

    turns, title, diversity = await anyio.to_thread.run_sync(load)
    return Template(
        "chat.html",
        context={
            "conversation_id": str(cid),
            "turns": turns,
            "title": title,
            "diversity_default": DEFAULT_DIVERSITY if diversity is None else float(diversity),
            "k_default": DEFAULT_K,
        },  # fmt: skip
        cookies=cookies,
    )


@post("/chat/messages", include_in_schema=False, status_code=200)
async def post_message(request: Request, svc: Services) -> Template | Redirect:
    """One chat message (multipart: text, file, start, k, route, conversation_id) → the new turns.

    htmx gets the new turns as a partial; a plain form post (no JavaScript, or the track page's
    "find similar" buttons) is redirected to the conversation.
    """
    form = await request.form()
    clip = await clip_from_form(form)
    f = decode_form(form, MessageForm)
    cid = conversations.parse_id(f.conversation_id) if f.conversation_id else None
    reference = MomentRef(track_id=f.ref_track, start_s=f.ref_start or 0.0) if f.ref_track else None
    lid, cookies = listener_cookies(request, svc)
    # The page sends the listener's local time with every request (static/app.js); a plain form post
    # has none, and its answer says so instead of guessing from the server's clock.
    hour = acontext.local_hour(
        local_time=f.local_time or request.headers.get("x-local-time"),
        timezone=request.headers.get("x-timezone"),
    )
    msg = Message(
        conversation_id=cid, text=f.text, clip=clip, start_s=f.start, k=f.k, reference=reference, listener_id=lid,
        base_message_id=f.base_message, route=f.route, diversity=f.diversity, aspects=aspects_of(f.aspects()),
        local_hour=hour,
    )  # fmt: skip
    result = await anyio.to_thread.run_sync(acontext.run_turn, svc, msg)

    if not request.headers.get("hx-request"):
        return Redirect(f"/c/{result.conversation_id}#m{result.turn.id}", status_code=303, cookies=cookies)

    def render() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        conv = result.conversation_id
        user = conversations.turn(svc.db, conv, result.user_message_id)
        if result.refused:  # answered without a search: the message and the reply saying why
            assert result.note_id is not None
            return _render_turns(svc, conv, [user, conversations.turn(svc.db, conv, result.note_id)]), []
        if result.refined:
            # The message and the reply go to the end of the thread; the refined answer replaces
            # itself where it stands (an out-of-band swap of its section).
            assert result.note_id is not None
            note = conversations.turn(svc.db, conv, result.note_id)
            refined = views.turn_context(svc.db, conv, result.turn)
            return _render_turns(svc, conv, [user, note]), [{**refined, "oob": True}]
        return _render_turns(svc, conv, [user, result.turn]), []

    turns, oob = await anyio.to_thread.run_sync(render)
    headers = {"HX-Push-Url": f"/c/{result.conversation_id}"} if cid is None else {}
    return Template(
        "_turns.html",
        context={
            "turns": turns,
            "oob_turns": oob,
            "conversation_id": str(result.conversation_id),
            "new_conversation": cid is None,
        },
        headers=headers,
        cookies=cookies,
    )


#: The work that searches an answer again in place (run in a worker thread); it returns the new answer.
AgainWork = Callable[[], conversations.Turn]


def _put_back_work(svc: Services, cid: uuid.UUID, message_id: int, form: FormMultiDict) -> AgainWork:
    """Undo "not this": the answer searched again with ``track_id`` allowed back in."""
    track_id = decode_form(form, TrackForm).track_id
    if track_id is None:
        raise InputError("track_id is required: the id of the track to put back")
    return partial(exclusions.put_back, svc, conversation_id=cid, message_id=message_id, track_id=track_id)


def _chip_work(svc: Services, cid: uuid.UUID, message_id: int, form: FormMultiDict) -> AgainWork:
    """Remove one chip (a part of the answer's query state): the answer searched again."""
    chip = decode_form(form, ChipForm).chip
    return partial(statechips.remove_chip, svc, conversation_id=cid, message_id=message_id, chip_id=chip)


def _context_work(svc: Services, cid: uuid.UUID, message_id: int, form: FormMultiDict) -> AgainWork:
    """A context toggle (form: ``signal``, ``on`` = 1/0), kept for the conversation: the answer ranked again."""
    toggle = decode_form(form, SignalForm)
    changes = {toggle.signal: toggle.on == "1"}
    return partial(acontext.rerank_with, svc, conversation_id=cid, message_id=message_id, changes=changes)


#: The forms an answer carries, by the last part of their path: how each one's form becomes the work.
_AGAIN: dict[str, Callable[[Services, uuid.UUID, int, FormMultiDict], AgainWork]] = {
    "put-back": _put_back_work,
    "chips": _chip_work,
    "context": _context_work,
}


# ``cid`` is the path's conversation id, parsed (app.py's dependency).
@post("/c/{conversation_id:str}/m/{message_id:int}/{action:str}", include_in_schema=False, status_code=200)
async def answer_again(
    request: Request, svc: Services, cid: uuid.UUID, message_id: int, action: str
) -> Template | Redirect:
    """One of the answer's own forms (``action``: put-back, chips, context): the answer searched again
    in place, re-rendered for htmx, else a redirect to it."""
    make_work = _AGAIN.get(action)
    if make_work is None:
        raise NotFound(f"an answer has no form {action!r}; its forms are {', '.join(_AGAIN)}")
    turn = await anyio.to_thread.run_sync(make_work(svc, cid, message_id, await request.form()))
    if not request.headers.get("hx-request"):
        return Redirect(f"/c/{cid}#m{message_id}", status_code=303)
    ctx = await anyio.to_thread.run_sync(partial(views.turn_context, svc.db, cid, turn))
    return Template("_turns.html", context={"turns": [ctx], "conversation_id": str(cid)})


@get("/c/{conversation_id:str}/m/{message_id:int}/explain", include_in_schema=False)
async def explain_stream(svc: Services, conversation_id: str, message_id: int) -> ServerSentEvent:
    """Server-sent events: ``explanation`` (HTML so far, then the checked version), then ``done``."""
    cid = conversations.parse_id(conversation_id)
    turn = await anyio.to_thread.run_sync(partial(conversations.turn, svc.db, cid, message_id))
    if turn.response is None:
        raise NotFound(f"message {message_id} has no search to explain")

    def events() -> Iterator[ServerSentEventMessage]:
        if turn.explained:
            yield ServerSentEventMessage(
                event="explanation", data=views.explanation_html(turn.content, turn.meta, message_id=turn.id)
            )
            yield ServerSentEventMessage(event="done", data="")
            return
        text = ""
        final = None
        try:
            for chunk in explain.explain_stream(turn.response or {}, llm=svc.llm):
                if chunk.final is not None:
                    final = chunk.final
                    break
                text += chunk.text
                yield ServerSentEventMessage(event="explanation", data=_streaming_html(text))
            assert final is not None
            conversations.store_explanation(svc.db, turn, final)
            yield ServerSentEventMessage(
                event="explanation",
                data=views.explanation_html(final.markdown, final.meta(), message_id=turn.id),
            )
        except Exception:  # the results are already on the page; say so instead of hanging
            log.exception("explanation of message %s failed", message_id)
            yield ServerSentEventMessage(
                event="explanation",
                data='<p class="notice offline">The explanation could not be written; the results above stand.</p>',
            )
        yield ServerSentEventMessage(event="done", data="")

    return ServerSentEvent(events(), headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _streaming_html(text: str) -> str:
    return f'<div class="explanation-text streaming"><p>{escape(text)}</p></div>'


@post("/plays", include_in_schema=False, status_code=204)
async def record_play(request: Request, svc: Services) -> None:
    track_id = decode_form(await request.form(), TrackForm).track_id
    if track_id is None:
        raise InputError("track_id is required")
    lid, _ = listener_of(request)
    await anyio.to_thread.run_sync(partial(_record_play, svc, listener_id=lid, track_id=track_id))


def _record_play(svc: Services, *, listener_id: str, track_id: int) -> None:
    with svc.db.connection() as conn:
        if conn.execute("SELECT 1 FROM tracks WHERE id = %s", (track_id,)).fetchone() is None:
            raise NotFound(f"no track {track_id} in the library")
        insert_play(conn, listener_id=listener_id, track_id=track_id)
        conn.commit()


@post("/c/{conversation_id:str}/delete", include_in_schema=False, status_code=303)
async def delete_conversation(svc: Services, conversation_id: str) -> Redirect:
    """Delete the conversation with its kept clips; back to a new chat."""
    cid = conversations.parse_id(conversation_id)
    await anyio.to_thread.run_sync(services.delete_conversation, svc, cid)
    return Redirect("/", status_code=303)


@get("/new", include_in_schema=False, sync_to_thread=False)
def new_chat() -> Redirect:
    return Redirect("/")


@get("/healthz", include_in_schema=False)
async def healthz(svc: Services) -> dict[str, str]:
    def ping() -> None:
        with svc.db.connection() as conn:
            conn.execute("SELECT 1")

    await anyio.to_thread.run_sync(ping)
    return {"status": "ok"}


HANDLERS = [
    chat_page,
    conversation_page,
    post_message,
    answer_again,
    explain_stream,
    record_play,
    delete_conversation,
    new_chat,
    healthz,
]
