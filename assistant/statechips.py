"""Removing one part of an answer's query state (a chip) in place: the answer is searched again
without it, keeps its message id, and is explained afresh — as taking a result out does
(:mod:`assistant.exclusions`)."""

from __future__ import annotations

import uuid
from typing import Any

from assistant import conversations, followups, querystate
from assistant.chat import empty_reason
from assistant.services import Services, previous_search
from cadenza.db import Database


def titles(db: Database, state: querystate.QueryState) -> dict[int, str]:
    """Titles of the tracks a state names (seeds, moments to avoid, track filters), for its chips."""
    ids = sorted(
        {m.track_id for m in (*state.seeds, *state.away)} | set(state.tracks) | set(state.exclude_tracks)
    )
    if not ids:
        return {}
    with db.connection() as conn:
        return {
            int(i): str(t) for i, t in conn.execute("SELECT id, title FROM tracks WHERE id = ANY(%s)", (ids,))
        }


def chips_of(db: Database, turn: conversations.Turn) -> list[querystate.Chip]:
    if turn.request is None:
        return []
    state = querystate.state_of_json(turn.request)
    return querystate.chips(state, titles(db, state))


def remove_chip(
    svc: Services, *, conversation_id: uuid.UUID, message_id: int, chip_id: str
) -> conversations.Turn:
    """The answer ``message_id`` searched again without the part ``chip_id`` shows."""
    turn = conversations.search_turn(svc.db, conversation_id, message_id)
    assert turn.request is not None  # search_turn returns answers with a search only
    state = querystate.without_chip(querystate.state_of_json(turn.request), chip_id)
    request = querystate.apply_state(state, previous_search(svc, turn).request)
    response = svc.search_json(request)
    meta: dict[str, Any] = {k: v for k, v in turn.meta.items() if k not in ("state_notes", "filter_reason")}
    excluded = [e for e in meta.get("excluded") or [] if int(e["track_id"]) in request.filters.exclude_tracks]
    if excluded:
        meta["excluded"] = excluded
    else:
        meta.pop("excluded", None)
    reason = empty_reason(svc, request, len(response.get("results") or []))
    if reason:
        meta["filter_reason"] = reason
    return conversations.refine_search_turn(
        svc.db, conversation_id, turn.id, based_on=turn.request,
        request=followups.request_to_json(request), response=response, meta=meta,
    )  # fmt: skip
