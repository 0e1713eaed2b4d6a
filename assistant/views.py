"""Template contexts for chat turns: analysis rows, result cards, chroma pictures, explanations."""

from __future__ import annotations

from html import escape
from typing import Any

import numpy as np
from markupsafe import Markup

from assistant import cards, claims, clips, describe, statechips
from assistant.conversations import Turn
from assistant.explain import render_markdown
from assistant.services import moment_chroma
from cadenza.db import Database


def explanation_html(markdown: str, meta: dict[str, Any], *, message_id: int) -> Markup:
    """The checked explanation plus its notice, removal notes and contradiction flags (safe HTML)."""
    parts = [f'<div class="explanation-text">{render_markdown(markdown, cite_prefix=f"r{message_id}")}</div>']
    if meta.get("notice"):
        parts.append(f'<p class="notice offline">{escape(meta["notice"])}</p>')
    for note in meta.get("notes") or []:
        parts.append(f'<p class="notice removed">{escape(note)}</p>')
    # Flags are marked at each claim in the text; an answer checked before that lists them here.
    for flag in meta.get("flags") or [] if claims.CONTRA_OPEN not in markdown else []:
        parts.append(f'<p class="flag contradiction">⚠ {escape(flag)}</p>')
    return Markup("".join(parts))


def path_steps(db: Database, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps of a moment path as the queue shows them (a removed track says so)."""
    present = existing_tracks(db, {int(s["track_id"]) for s in steps})
    return [
        {
            **s, "n": i, "range": describe.time_range(float(s["start"]), float(s["end"])),
            "removed": int(s["track_id"]) not in present,
        }
        for i, s in enumerate(steps, start=1)
    ]  # fmt: skip


def existing_tracks(db: Database, track_ids: set[int]) -> set[int]:
    """Which of ``track_ids`` are still in the library (an old answer may cite a removed track)."""
    if not track_ids:
        return set()
    with db.connection() as conn:
        rows = conn.execute("SELECT id FROM tracks WHERE id = ANY(%s)", (sorted(track_ids),)).fetchall()
    return {int(r[0]) for r in rows}


def _passage(query: dict[str, Any], meta: dict[str, Any]) -> str | None:
    if meta.get("same_passage"):
        return "(the same passage as before)"
    if query.get("start") is None or query.get("end") is None:
        return None
    span = describe.time_range(float(query["start"]), float(query["end"]))
    if query.get("source") in ("moment", "blend") and query.get("title"):
        return f"{query['title']} {span}"
    return span


def context_rows(query: dict[str, Any]) -> list[dict[str, Any]]:
    """The answer's listening-context line: per signal its text, switch and what it changed."""
    rows = []
    for s in (query.get("context") or {}).get("signals") or []:
        effect = ""
        if s.get("applied"):
            n = int(s.get("changed_ranks") or 0)
            effect = f"moved {n} result{'s' if n != 1 else ''}" if n else "no change to this answer"
        rows.append(
            {"signal": str(s.get("signal")), "on": bool(s.get("on")), "applied": bool(s.get("applied")),
             "text": str(s.get("text") or ""), "effect": effect}
        )  # fmt: skip
    return rows


def turn_context(db: Database, conversation_id: Any, turn: Turn) -> dict[str, Any]:
    """Everything the ``_turn.html`` template needs for one message."""
    ctx: dict[str, Any] = {
        "id": turn.id,
        "role": turn.role,
        "content": turn.content,
        "meta": turn.meta,
        "explained": turn.explained,
        "conversation_id": str(conversation_id),
        "is_search": turn.response is not None,
    }
    if turn.role == "assistant" and turn.response is None:
        ctx["note"] = turn.content
        ctx["refined"] = turn.meta.get("refined")  # the answer a "not #3" refined in place
        if turn.meta.get("path"):
            ctx["path"] = path_steps(db, turn.meta["path"])
        return ctx
    if turn.response is None:
        return ctx
    response = turn.response
    results = response.get("results") or []
    query = response.get("query") or {}
    qc = turn.meta.get("query_chroma")
    query_chroma = np.asarray(qc, dtype=np.float32) if qc else None
    chroma = moment_chroma(db, [(int(r["track_id"]), float(r["start"]), float(r["end"])) for r in results])
    present = existing_tracks(db, {int(r["track_id"]) for r in results})
    clip = clips.info(db, turn.meta["clip_id"]) if turn.meta.get("clip_id") else None
    ctx.update(
        clip=(
            {"src": f"/clips/{clip.id}", "start": clip.passage_start, "end": clip.passage_end}
            if clip is not None
            else None
        ),
        # A/B needs one query to play: the kept clip, or the library moment searched from.
        can_ab=clip is not None or (query.get("source") == "moment" and query.get("track_id") is not None),
        chips=statechips.chips_of(db, turn),
        state_notes=list(turn.meta.get("state_notes") or []),
        filter_reason=turn.meta.get("filter_reason") or "",
        analysis=describe.analysis(query),
        melody_note=melody_note(query),
        insights=describe.style_insights(query, results),
        passage=_passage(query, turn.meta),
        cards=[
            cards.card(
                r,
                message_id=turn.id,
                query_chroma=query_chroma,
                chroma=chroma.get((int(r["track_id"]), float(r["start"]))),
                removed=int(r["track_id"]) not in present,
            )
            for r in results
        ],
        nothing_similar=bool(response.get("nothing_similar")),
        nothing_reason=query.get("nothing_reason") or "",
        parser=turn.meta.get("parser"),
        followup=turn.followup,
        excluded=list(turn.meta.get("excluded") or []),
        context=context_rows(query),
        explanation=explanation_html(turn.content, turn.meta, message_id=turn.id) if turn.explained else None,
    )
    return ctx


def melody_note(query: dict[str, Any]) -> str:
    """One line when the query went the melody route: that it did, and in which key it matched."""
    if query.get("route") != "melody":
        return ""
    shift = query.get("melody_key_shift")
    if shift is None:
        return "Searched by melody (a hum, whistle or single line): no library melody matched it."
    sung, there = query.get("sung_key"), query.get("matched_key")
    if shift == 0:
        how = "in the recording's key" + (f" ({there})" if there else "")
    else:
        how = f"{abs(shift)} semitone{'s' if abs(shift) != 1 else ''} {'lower' if shift > 0 else 'higher'} than the recording"
        if sung and there:
            how += f": you sang in {sung}, the passage is in {there}"
    return f"Searched by melody (a hum, whistle or single line), in any key; the best match was sung {how}."
