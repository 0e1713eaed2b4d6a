"""Conversations in PostgreSQL (sql/003): messages, the searches they ran, their citations.

Plain SQL over the pool; every function takes the :class:`~cadenza.db.Database` explicitly.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from assistant.explain import Explanation, citations_in
from cadenza.db import Database
from cadenza.errors import CadenzaError, NotFound


class Conflict(CadenzaError):
    """Two changes of one answer crossed; the later one was not applied."""

    status_code = 409


@dataclass
class Turn:
    """One message with, for an assistant message, the search it ran."""

    id: int
    role: str
    content: str
    meta: dict[str, Any]
    explained: bool
    query_id: int | None = None
    request: dict[str, Any] | None = None
    followup: dict[str, Any] | None = None
    audio_ref: str | None = None
    result_set_id: int | None = None
    response: dict[str, Any] | None = None
    citations: list[int] = field(default_factory=list)


def parse_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise NotFound(f"no conversation {raw!r}; start a new one at /") from None


def create(db: Database, *, listener_id: str = "", title: str = "") -> uuid.UUID:
    with db.connection() as conn:
        row = conn.execute(
            "INSERT INTO conversations (listener_id, title) VALUES (%s, %s) RETURNING id",
            (listener_id, title[:200]),
        ).fetchone()
        conn.commit()
    assert row is not None
    return row[0]


def exists(db: Database, conversation_id: uuid.UUID) -> bool:
    with db.connection() as conn:
        return (
            conn.execute("SELECT 1 FROM conversations WHERE id = %s", (conversation_id,)).fetchone()
            is not None
        )


def add_user_message(
    db: Database, conversation_id: uuid.UUID, text: str, *, meta: dict[str, Any] | None = None
) -> int:
    with db.connection() as conn:
        row = conn.execute(
            "INSERT INTO messages (conversation_id, role, content, meta, explained)"
            " VALUES (%s, 'user', %s, %s, true) RETURNING id",
            (conversation_id, text, Jsonb(meta or {})),
        ).fetchone()
        conn.execute(
            "UPDATE conversations SET updated_at = now(),"
            " title = CASE WHEN title = '' THEN left(%s, 120) ELSE title END WHERE id = %s",
            (text or (meta or {}).get("clip_name", ""), conversation_id),
        )
        conn.commit()
    assert row is not None
    return int(row[0])


def add_search_turn(
    db: Database,
    conversation_id: uuid.UUID,
    *,
    request: dict[str, Any],
    response: dict[str, Any],
    followup: dict[str, Any] | None = None,
    audio_ref: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Turn:
    """Store an assistant message with its query and result set (explanation pending)."""
    with db.connection() as conn, conn.transaction():
        mid = conn.execute(
            "INSERT INTO messages (conversation_id, role, content, meta, explained)"
            " VALUES (%s, 'assistant', '', %s, false) RETURNING id",
            (conversation_id, Jsonb(meta or {})),
        ).fetchone()[0]  # type: ignore[index]
        qid = conn.execute(
            "INSERT INTO queries (message_id, request, followup, audio_ref) VALUES (%s, %s, %s, %s) RETURNING id",
            (mid, Jsonb(request), Jsonb(followup) if followup is not None else None, audio_ref),
        ).fetchone()[0]  # type: ignore[index]
        rsid = conn.execute(
            "INSERT INTO result_sets (query_id, response) VALUES (%s, %s) RETURNING id",
            (qid, Jsonb(response)),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE conversations SET updated_at = now() WHERE id = %s", (conversation_id,))
    return Turn(
        id=mid, role="assistant", content="", meta=meta or {}, explained=False, query_id=qid,
        request=request, followup=followup, audio_ref=audio_ref, result_set_id=rsid, response=response,
    )  # fmt: skip


#: Keys the explanation adds to an answer's meta; a refined answer is explained afresh.
EXPLANATION_META = ("notice", "notes", "flags", "used_llm")


def refine_search_turn(
    db: Database,
    conversation_id: uuid.UUID,
    message_id: int,
    *,
    based_on: dict[str, Any],
    request: dict[str, Any],
    response: dict[str, Any],
    meta: dict[str, Any],
) -> Turn:
    """Replace an answer's request, results and meta in place; its explanation is to be written again.

    ``based_on`` is the request the caller refined: when another refinement of the same answer was
    stored meanwhile, nothing changes and :class:`Conflict` is raised (no refinement is lost).
    """
    with db.connection() as conn, conn.transaction():
        row = conn.execute(
            "UPDATE queries SET request = %s FROM messages m WHERE queries.message_id = m.id"
            " AND m.id = %s AND m.conversation_id = %s AND queries.request = %s RETURNING queries.id",
            (Jsonb(request), message_id, conversation_id, Jsonb(based_on)),
        ).fetchone()
        if row is None:
            raise Conflict("this answer changed while it was being refined; reload the page and try again")
        conn.execute("UPDATE result_sets SET response = %s WHERE query_id = %s", (Jsonb(response), row[0]))
        fresh = {k: v for k, v in meta.items() if k not in EXPLANATION_META}
        conn.execute(
            "UPDATE messages SET meta = %s, content = '', explained = false WHERE id = %s",
            (Jsonb(fresh), message_id),
        )
        conn.execute("DELETE FROM citations WHERE message_id = %s", (message_id,))
        conn.execute("UPDATE conversations SET updated_at = now() WHERE id = %s", (conversation_id,))
    return turn(db, conversation_id, message_id)


def add_assistant_note(
    db: Database, conversation_id: uuid.UUID, text: str, *, meta: dict[str, Any] | None = None
) -> int:
    """An assistant message without a search (an error the listener can act on)."""
    with db.connection() as conn:
        row = conn.execute(
            "INSERT INTO messages (conversation_id, role, content, meta, explained)"
            " VALUES (%s, 'assistant', %s, %s, true) RETURNING id",
            (conversation_id, text, Jsonb(meta or {})),
        ).fetchone()
        conn.commit()
    assert row is not None
    return int(row[0])


def store_explanation(db: Database, turn: Turn, explanation: Explanation) -> None:
    """Store the checked explanation of the answer ``turn``, with the results it cites."""
    n = len((turn.response or {}).get("results") or [])
    save_explanation(
        db, turn.id, markdown=explanation.markdown, meta=explanation.meta(),
        cited=list(citations_in(explanation.markdown, n)),
    )  # fmt: skip


def save_explanation(
    db: Database, message_id: int, *, markdown: str, meta: dict[str, Any], cited: list[int]
) -> None:
    """Store the checked explanation and the moments it cites."""
    with db.connection() as conn, conn.transaction():
        row = conn.execute(
            "UPDATE messages SET content = %s, meta = meta || %s, explained = true WHERE id = %s"
            " RETURNING (SELECT rs.id FROM queries q JOIN result_sets rs ON rs.query_id = q.id"
            "            WHERE q.message_id = messages.id), (SELECT response FROM queries q"
            "            JOIN result_sets rs ON rs.query_id = q.id WHERE q.message_id = messages.id)",
            (markdown, Jsonb(meta), message_id),
        ).fetchone()
        if row is None or row[0] is None:
            return
        rsid, response = row
        by_rank = {int(r["rank"]): r for r in response.get("results", [])}
        conn.execute("DELETE FROM citations WHERE message_id = %s", (message_id,))
        for n in cited:
            r = by_rank.get(n)
            if r is None:
                continue
            conn.execute(
                "INSERT INTO citations (message_id, result_set_id, rank, track_id, start_s, end_s)"
                " SELECT %s, %s, %s, %s, %s, %s WHERE EXISTS (SELECT 1 FROM tracks WHERE id = %s)",
                (message_id, rsid, n, r["track_id"], r["start"], r["end"], r["track_id"]),
            )


# Column names are Turn's fields: rows come back as Turns (psycopg's class_row).
_TURN_SQL = """
SELECT m.id, m.role, m.content, coalesce(m.meta, '{}') AS meta, m.explained, q.id AS query_id, q.request,
       q.followup, q.audio_ref, rs.id AS result_set_id, rs.response,
       coalesce((SELECT array_agg(c.rank ORDER BY c.rank) FROM citations c WHERE c.message_id = m.id),
                '{}') AS citations
FROM messages m
LEFT JOIN queries q ON q.message_id = m.id
LEFT JOIN result_sets rs ON rs.query_id = q.id
"""


def _turns(conn: psycopg.Connection, where: str, params: tuple[object, ...]) -> list[Turn]:
    with conn.cursor(row_factory=class_row(Turn)) as cur:
        return cur.execute(_TURN_SQL + where, params).fetchall()


def turns(db: Database, conversation_id: uuid.UUID) -> list[Turn]:
    with db.connection() as conn:
        if conn.execute("SELECT 1 FROM conversations WHERE id = %s", (conversation_id,)).fetchone() is None:
            raise NotFound(f"no conversation {conversation_id}; start a new one at /")
        return _turns(conn, " WHERE m.conversation_id = %s ORDER BY m.id", (conversation_id,))


def turn(db: Database, conversation_id: uuid.UUID, message_id: int) -> Turn:
    with db.connection() as conn:
        found = _turns(conn, " WHERE m.conversation_id = %s AND m.id = %s", (conversation_id, message_id))
    if not found:
        raise NotFound(f"no message {message_id} in conversation {conversation_id}")
    return found[0]


def search_turn(db: Database, conversation_id: uuid.UUID, message_id: int) -> Turn:
    """The answer ``message_id``; NotFound when it is no answer with a search (a reply, a question)."""
    found = turn(db, conversation_id, message_id)
    if found.response is None or found.request is None:
        raise NotFound(f"message {message_id} has no search")
    return found


def last_search(db: Database, conversation_id: uuid.UUID) -> Turn | None:
    with db.connection() as conn:
        found = _turns(
            conn,
            " WHERE m.conversation_id = %s AND rs.id IS NOT NULL ORDER BY m.id DESC LIMIT 1",
            (conversation_id,),
        )
    return found[0] if found else None


def title(db: Database, conversation_id: uuid.UUID) -> str:
    with db.connection() as conn:
        row = conn.execute("SELECT title FROM conversations WHERE id = %s", (conversation_id,)).fetchone()
    return row[0] if row else ""


def recent(db: Database, listener_id: str, *, limit: int = 10) -> list[dict[str, Any]]:
    """The listener's latest conversations that have at least one message: id, title, updated_at."""
    if not listener_id:
        return []
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT c.id, c.title, c.updated_at FROM conversations c WHERE c.listener_id = %s"
            " AND EXISTS (SELECT 1 FROM messages m WHERE m.conversation_id = c.id)"
            " ORDER BY c.updated_at DESC LIMIT %s",
            (listener_id, limit),
        ).fetchall()
    return [{"id": str(r[0]), "title": r[1] or "Untitled", "updated_at": r[2]} for r in rows]


def delete(db: Database, conversation_id: uuid.UUID) -> list[str]:
    """Delete a conversation with everything it owns (messages, searches, kept query clips: the
    foreign keys cascade). Returns the stored passage names (``audio_ref``) no other search uses,
    for the caller to remove from disk. NotFound when there is no such conversation."""
    with db.connection() as conn, conn.transaction():
        refs = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT q.audio_ref FROM queries q JOIN messages m ON m.id = q.message_id"
                " WHERE m.conversation_id = %s AND q.audio_ref IS NOT NULL",
                (conversation_id,),
            ).fetchall()
        ]
        gone = conn.execute(
            "DELETE FROM conversations WHERE id = %s RETURNING id", (conversation_id,)
        ).fetchone()
        if gone is None:
            raise NotFound(f"no conversation {conversation_id}; it may have been deleted already")
        still_used = {
            r[0]
            for r in conn.execute(
                "SELECT audio_ref FROM queries WHERE audio_ref = ANY(%s)", (refs,)
            ).fetchall()
        }
    return [r for r in refs if r not in still_used]
