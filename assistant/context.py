"""The request side of listening context: the switches and the listener's local time.

What the switches do to a ranking is :mod:`retrieval.context`; here they are parsed from the JSON
API (``context: {time_of_day, history, mood}``) and the page's toggle, kept per conversation
(``conversations.context``, sql/010), and the local time is read from an explicit ``local_time``
("23:10" or an ISO 8601 date-time) or the ``X-Timezone`` header (an IANA name such as
"Europe/Berlin", applied to the server's clock). The page sends both with every request.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from psycopg.types.json import Jsonb

from assistant import chat, conversations, followups, services
from cadenza.db import Database
from cadenza.errors import InputError, NotFound
from retrieval.context import SIGNAL_TERMS
from retrieval.types import Context

SIGNALS = tuple(SIGNAL_TERMS)
_HHMM = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?")


def switches(data: Mapping[str, bool] | None, *, base: Context | None = None) -> Context:
    """``{"time_of_day": bool, "history": bool, "mood": bool}`` (any subset) over ``base`` (all on)."""
    base = base or Context()
    if data is None:
        return base
    if not isinstance(data, dict):
        raise InputError(
            'context must be an object, e.g. {"time_of_day": false, "history": true, "mood": true}'
        )
    unknown = set(data) - set(SIGNALS)
    if unknown:
        raise InputError(f"unknown context signal(s) {sorted(map(str, unknown))}; use {list(SIGNALS)}")
    for name, value in data.items():
        if not isinstance(value, bool):
            raise InputError(f"context.{name} must be true or false")
    return replace(base, **data)


def local_hour(
    *, local_time: str | None = None, timezone: str | None = None, now: datetime | None = None
) -> float | None:
    """The listener's local time of day in hours, or None when neither is given.

    ``local_time`` wins: "HH:MM[:SS]" on a 24-hour clock, or an ISO 8601 date-time (its own wall
    clock is the local time). Else ``timezone``, an IANA name, turns ``now`` (default: the clock)
    into local time.
    """
    if local_time not in (None, ""):
        text = str(local_time).strip()
        m = _HHMM.fullmatch(text)
        if m:
            h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
            if h < 24 and mi < 60 and s < 60:
                return h + mi / 60 + s / 3600
        else:
            try:
                t = datetime.fromisoformat(text)
            except ValueError:
                pass
            else:
                return t.hour + t.minute / 60 + t.second / 3600
        raise InputError(
            f"local_time {text[:40]!r} is not a time of day; send HH:MM on a 24-hour clock (e.g. 23:10) "
            "or an ISO 8601 date-time"
        )
    if timezone in (None, ""):
        return None
    name = str(timezone).strip()
    try:
        if len(name) > 64 or "\x00" in name or ".." in name:
            raise ValueError(name)
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(
            f"X-Timezone {name[:40]!r} is not a time zone name; send an IANA name such as Europe/Berlin"
        ) from None
    t = (now or datetime.now(UTC)).astimezone(zone)
    return t.hour + t.minute / 60 + t.second / 3600


def conversation_switches(db: Database, conversation_id: uuid.UUID) -> Context:
    """The switches stored for a conversation (all on when none were changed)."""
    with db.connection() as conn:
        row = conn.execute("SELECT context FROM conversations WHERE id = %s", (conversation_id,)).fetchone()
    if row is None:
        raise NotFound(f"no conversation {conversation_id}; start a new one at /")
    stored = row[0] or {}
    return Context(**{f.name: bool(stored.get(f.name, True)) for f in fields(Context)})


def save_switches(db: Database, conversation_id: uuid.UUID, ctx: Context) -> None:
    with db.connection() as conn:
        conn.execute(
            "UPDATE conversations SET context = %s WHERE id = %s", (Jsonb(asdict(ctx)), conversation_id)
        )
        conn.commit()


def rerank_with(
    svc: services.Services, *, conversation_id: uuid.UUID, message_id: int, changes: dict[str, bool]
) -> conversations.Turn:
    """Switch signals (``{"time_of_day": False}``) for the conversation and rank the answer ``message_id`` again.

    The answer keeps its request (its local time included), so switching a signal off shows exactly
    the ranking without it; later messages of the conversation rank with the new switches too.
    """
    turn = conversations.search_turn(svc.db, conversation_id, message_id)
    assert turn.request is not None  # search_turn returns answers with a search only
    ctx = switches(changes, base=conversation_switches(svc.db, conversation_id))
    request = replace(services.previous_search(svc, turn).request, context=ctx)
    response = svc.search_json(request)
    refined = conversations.refine_search_turn(
        svc.db, conversation_id, turn.id, based_on=turn.request,
        request=followups.request_to_json(request), response=response, meta=dict(turn.meta),
    )  # fmt: skip
    save_switches(svc.db, conversation_id, ctx)
    return refined


def run_turn(
    svc: services.Services, msg: services.Message, *, overrides: Mapping[str, bool] | None = None
) -> services.TurnResult:
    """:func:`assistant.chat.run_turn` with the conversation's switches, ``overrides`` (the API's
    ``context`` object) applied on top and, when given, kept for the rest of the conversation."""
    cid = msg.conversation_id
    base = conversation_switches(svc.db, cid) if cid is not None else Context()
    ctx = switches(overrides, base=base)
    result = chat.run_turn(svc, msg, context=ctx)
    if overrides is not None and ctx != base:
        save_switches(svc.db, result.conversation_id, ctx)
    return result
