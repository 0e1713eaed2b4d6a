"""Template contexts for chat turns: analysis rows, result cards, chroma pictures, explanations."""

from __future__ import annotations

from typing import Any

import numpy as np
from markupsafe import Markup

from assistant import describe
from assistant.chat import moment_chroma
from assistant.conversations import Turn
from assistant.explain import render_markdown
from assistant.pictures import chroma_pair_svg
from cadenza.db import Database


def explanation_html(markdown: str, meta: dict[str, Any], *, message_id: int) -> Markup:
    """The checked explanation plus its notice, removal notes and contradiction flags (safe HTML)."""
    from html import escape

    parts = [f'<div class="explanation-text">{render_markdown(markdown, cite_prefix=f"r{message_id}")}</div>']
    if meta.get("notice"):
        parts.append(f'<p class="notice offline">{escape(meta["notice"])}</p>')
    for note in meta.get("notes") or []:
        parts.append(f'<p class="notice removed">{escape(note)}</p>')
    for flag in meta.get("flags") or []:
        parts.append(f'<p class="flag contradiction">⚠ {escape(flag)}</p>')
    return Markup("".join(parts))


def _card(
    r: dict[str, Any],
    *,
    message_id: int,
    query_chroma: np.ndarray | None,
    chroma: dict[tuple[int, float], np.ndarray],
) -> dict[str, Any]:
    comps = r.get("components") or {}
    harmony = comps.get("harmony", comps.get("chroma"))
    timbre = comps.get("embedding", comps.get("timbre"))
    d = r.get("descriptors") or {}
    picture = None
    rc = chroma.get((int(r["track_id"]), float(r["start"])))
    if query_chroma is not None and rc is not None:
        picture = Markup(
            chroma_pair_svg(
                query=query_chroma, result=rc, key_shift=int(r.get("key_shift") or 0),
                label=f"chroma of the query and of result {r['rank']}",
            )
        )  # fmt: skip
    facts = [
        x for x in (describe.key_name(d), f"{describe.tempo(d):.0f} BPM" if describe.tempo(d) else None) if x
    ]
    return {
        "rank": r["rank"],
        "anchor": f"r{message_id}-{r['rank']}",
        "track_id": r["track_id"],
        "title": r.get("title") or f"Track {r['track_id']}",
        "composer": r.get("composer") or "Unknown composer",
        "era": r.get("era") or "",
        "work": r.get("work") or "",
        "start": float(r["start"]),
        "end": float(r["end"]),
        "range": describe.time_range(float(r["start"]), float(r["end"])),
        "confidence": float(r.get("confidence") or 0.0),
        "score": float(r.get("score") or 0.0),
        "timbre": timbre,
        "harmony": harmony,
        "components": {k: float(v) for k, v in comps.items() if isinstance(v, int | float)},
        "reason": r.get("reason") or "",
        "facts": ", ".join(facts),
        "picture": picture,
    }


def _passage(query: dict[str, Any], meta: dict[str, Any]) -> str | None:
    if meta.get("same_passage"):
        return "(the same passage as before)"
    if query.get("start") is None or query.get("end") is None:
        return None
    span = describe.time_range(float(query["start"]), float(query["end"]))
    if query.get("source") in ("moment", "blend") and query.get("title"):
        return f"{query['title']} {span}"
    return span


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
        return ctx
    if turn.response is None:
        return ctx
    response = turn.response
    results = response.get("results") or []
    query = response.get("query") or {}
    qc = turn.meta.get("query_chroma")
    query_chroma = np.asarray(qc, dtype=np.float32) if qc else None
    chroma = moment_chroma(db, [(int(r["track_id"]), float(r["start"]), float(r["end"])) for r in results])
    ctx.update(
        analysis=describe.analysis(query),
        insights=describe.style_insights(query, results),
        passage=_passage(query, turn.meta),
        cards=[_card(r, message_id=turn.id, query_chroma=query_chroma, chroma=chroma) for r in results],
        nothing_similar=bool(response.get("nothing_similar")),
        nothing_reason=query.get("nothing_reason") or "",
        parser=turn.meta.get("parser"),
        followup=turn.followup,
        excluded=list(turn.meta.get("excluded") or []),
        explanation=explanation_html(turn.content, turn.meta, message_id=turn.id) if turn.explained else None,
    )
    return ctx
