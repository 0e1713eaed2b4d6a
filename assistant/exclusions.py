"""Taking results out of an answer ("not #3", "drop the second", the card's "Not this") and putting them back.

An exclusion refines the answer it names *in place*: the same search runs again with the excluded
tracks filtered out, so the other results keep their relative order and one more is pulled in (k
stays k while the library has enough), and the answer is explained afresh. A new turn would repeat
the whole answer to change one line of it. The answer's meta lists what was left out (shown on the
page, each with "Put back"); the request's ``filters.exclude_tracks`` carries it into every later
follow-up of the conversation, whose answers list it too. A new clip or a named moment starts over.

Each entry of ``meta["excluded"]``: ``{"track_id", "title", "composer", "rank"}`` (its rank when it
was taken out).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from assistant import conversations, followups
from assistant.services import Services, TurnResult, previous_search
from cadenza.errors import InputError
from retrieval.types import SearchRequest


def _entry(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "track_id": int(result["track_id"]),
        "title": str(result.get("title") or f"Track {result['track_id']}"),
        "composer": str(result.get("composer") or ""),
        "rank": int(result["rank"]),
    }


def _result(turn: conversations.Turn, rank: int) -> dict[str, Any]:
    results = (turn.response or {}).get("results") or []
    for r in results:
        if int(r["rank"]) == rank:
            return dict(r)
    raise InputError(f"there is no result #{rank} in that answer; name one of #1–#{len(results)}")


def carried(
    base: conversations.Turn, followup: followups.FollowUp | None, request: SearchRequest
) -> list[dict[str, Any]]:
    """What a new follow-up turn still leaves out: the base answer's list plus its own "not #n"."""
    out = {e["track_id"]: e for e in base.meta.get("excluded") or []}
    for rank in followup.unlike if followup is not None else ():
        e = _entry(_result(base, rank))
        out.setdefault(e["track_id"], e)
    return [e for tid, e in out.items() if tid in request.filters.exclude_tracks]


def _with_tracks_excluded(request: SearchRequest, track_ids: Sequence[int]) -> SearchRequest:
    f = request.filters
    return replace(
        request, filters=replace(f, exclude_tracks=tuple(dict.fromkeys([*f.exclude_tracks, *track_ids])))
    )


def _refine(
    svc: Services,
    conversation_id: uuid.UUID,
    turn: conversations.Turn,
    request: SearchRequest,
    excluded: list[dict[str, Any]],
) -> conversations.Turn:
    assert turn.request is not None
    response = svc.search_json(request)
    meta = {**turn.meta, "excluded": excluded}
    if not excluded:
        meta.pop("excluded")
    return conversations.refine_search_turn(
        svc.db, conversation_id, turn.id, based_on=turn.request,
        request=followups.request_to_json(request), response=response, meta=meta,
    )  # fmt: skip


def exclude_in_place(
    svc: Services,
    *,
    conversation_id: uuid.UUID,
    turn: conversations.Turn,
    ranks: Sequence[int],
    text: str,
    parser: str | None,
) -> TurnResult:
    """Take results ``ranks`` out of the answer ``turn``; store the listener's message and a short reply."""
    if turn.response is None or turn.request is None:
        raise InputError(f"message {turn.id} has no search to refine")
    taken = [_entry(_result(turn, rank)) for rank in dict.fromkeys(ranks)]
    before = len(turn.response.get("results") or [])
    previous = previous_search(svc, turn)
    request = _with_tracks_excluded(previous.request, [e["track_id"] for e in taken])
    old = {e["track_id"]: e for e in turn.meta.get("excluded") or []}
    excluded = [*old.values(), *(e for e in taken if e["track_id"] not in old)]
    refined = _refine(svc, conversation_id, turn, request, excluded)
    user_id = conversations.add_user_message(svc.db, conversation_id, text)
    names = ", ".join(f"#{e['rank']} “{e['title']}”" for e in taken)
    after = len((refined.response or {}).get("results") or [])
    rest = " and brought in the next match" if after >= before else "; nothing else matched, so it is shorter"
    note = f"Left {names} out of the answer above{rest}. “Put back” there undoes it."
    note_id = conversations.add_assistant_note(
        svc.db, conversation_id, note, meta={"refined": turn.id, "parser": parser}
    )
    return TurnResult(
        conversation_id=conversation_id, user_message_id=user_id, turn=refined, parser=parser,
        refined=True, note_id=note_id,
    )  # fmt: skip


def put_back(
    svc: Services, *, conversation_id: uuid.UUID, message_id: int, track_id: int
) -> conversations.Turn:
    """Undo an exclusion: the answer ``message_id`` searched again with ``track_id`` allowed back in."""
    turn = conversations.search_turn(svc.db, conversation_id, message_id)
    excluded = [e for e in turn.meta.get("excluded") or [] if int(e["track_id"]) != track_id]
    if len(excluded) == len(turn.meta.get("excluded") or []):
        raise InputError(f"track {track_id} is not left out of this answer; there is nothing to put back")
    request = previous_search(svc, turn).request
    f = request.filters
    request = replace(
        request,
        filters=replace(f, exclude_tracks=tuple(t for t in f.exclude_tracks if t != track_id)),
        minus=tuple(
            m for m in request.minus if m.track_id != track_id
        ),  # "like #2 but not #3" moved away too
    )
    return _refine(svc, conversation_id, turn, request, excluded)
