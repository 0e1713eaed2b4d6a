"""Result cards in plain language: what a listener reads first, the measured numbers behind "details".

Pure functions from one result of ``SearchResponse.to_json()`` (plus the chroma the page draws) to
the dict ``_turn.html`` renders. A card leads with the title, composer, the moment's time range,
likeness and match, and one sentence of why; the per-aspect numbers stay one click away.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from markupsafe import Markup

from assistant import describe
from assistant.pictures import chroma_overlay_svg

#: Components shown under their own label (or not at all) rather than in the generic list.
_NAMED_ASPECTS = {
    "embedding": "sound and texture",
    "timbre": "sound and texture",
    "harmony": "harmonic colour",
    "chroma": "harmonic colour",
    "progression": "chord motion",
    "localization": "alignment in time",
    "mood": "mood fit",
    "tempo": "tempo fit",
    "discovery": "new composer",
    "time_of_day": "time-of-day fit",
}
_HIDDEN_ASPECTS = {"query_transposed"}


def _shift_words(semitones: int) -> str:
    n = abs(int(semitones))
    return f"{n} semitone{'s' if n != 1 else ''} {'up' if semitones > 0 else 'down'}"


def likeness_of(r: Mapping[str, Any]) -> float:
    """How alike it sounds, [0, 1]: the result's ``likeness`` (0–100 against the library,
    retrieval.likeness) / 100; for an answer stored before search gave one, the embedding
    similarity the ranking started from (the closest measured stand-in)."""
    comps = r.get("components") or {}
    if r.get("likeness") is not None:
        return float(np.clip(float(r["likeness"]) / 100.0, 0.0, 1.0))
    v = comps.get("embedding", comps.get("timbre", r.get("score", 0.0)))
    return float(np.clip(float(v or 0.0), 0.0, 1.0))


def match_of(r: Mapping[str, Any]) -> float:
    """How surely it is the same passage, [0, 1]: ``match`` when given, else the calibrated confidence."""
    return float(np.clip(float(r.get("match", r.get("confidence", 0.0)) or 0.0), 0.0, 1.0))


def why_sentence(r: Mapping[str, Any]) -> str:
    """One plain sentence saying why this moment is here, from its measured components."""
    comps = r.get("components") or {}
    emb = float(comps.get("embedding", comps.get("timbre", 0.0)) or 0.0)
    if emb >= 0.8:
        head = "Very close in sound and texture"
    elif emb >= 0.6:
        head = "Similar in sound and texture"
    else:
        head = "A looser likeness in sound"
    alike = []  # what else is alike
    if float(comps.get("harmony", comps.get("chroma", 0.0)) or 0.0) >= 0.5:
        shift = int(r.get("key_shift") or 0)
        alike.append("the same harmonic colour" + (f" {_shift_words(shift)}" if shift else ""))
    if float(comps.get("progression", 0.0) or 0.0) >= 0.5:
        alike.append("similar chord motion")
    if float(comps.get("mood", 0.0) or 0.0) >= 0.7:
        alike.append("the mood you asked for")
    notes = []  # how it was found, and what is new about it
    moved = int(comps.get("query_transposed", 0) or 0)
    if moved:
        notes.append(f"found with your clip moved {_shift_words(moved)}")
    if comps.get("discovery") == 1.0:
        notes.append("by a composer you have not heard yet")
    sentence = head
    if alike:
        sentence += ", with " + describe.spoken_list(alike)
    if notes:
        sentence += "; " + " and ".join(notes)
    return sentence + "."


def aspect_rows(r: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The measured numbers behind the card, labelled, for the "details" disclosure."""
    comps = r.get("components") or {}
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in comps.items():
        if name in _HIDDEN_ASPECTS or not isinstance(value, int | float):
            continue
        label = _NAMED_ASPECTS.get(name, name)
        if label in seen:
            continue
        seen.add(label)
        rows.append((label, f"{float(value):.2f}"))
    rows.append(("ranking score", f"{float(r.get('score') or 0.0):.2f}"))
    for name, value in (r.get("aspects") or {}).items():  # the four aspects of likeness, 0-1
        rows.append((f"{name} (aspect)", f"{float(value):.2f}"))
    rows.append(("same-passage match", f"{match_of(r) * 100:.0f}%"))
    if r.get("key_shift"):
        rows.append(("key offset", f"{int(r['key_shift']):+d} semitones"))
    if r.get("also_at"):  # retrieval.repeats
        rows.append(("also plays at", ", ".join(f"{float(a):.1f} s" for a in r["also_at"])))
    d = r.get("descriptors") or {}
    if describe.key_name(d):
        rows.append(("key", str(describe.key_name(d))))
    if describe.tempo(d):
        rows.append(("tempo", f"{describe.tempo(d):.0f} BPM"))
    return rows


def card(
    r: Mapping[str, Any],
    *,
    message_id: int,
    query_chroma: np.ndarray | None,
    chroma: np.ndarray | None,
    removed: bool = False,
) -> dict[str, Any]:
    """The template context of one result card. ``chroma``: the match's 10-fps chroma ``[n, 12]``."""
    title = r.get("title") or f"Track {r['track_id']}"
    picture = None
    if query_chroma is not None and chroma is not None and len(query_chroma) and len(chroma):
        picture = Markup(
            chroma_overlay_svg(
                query=query_chroma, match=chroma, key_shift=int(r.get("key_shift") or 0),
                label=f"pitch classes of your passage and of {title}, aligned",
            )
        )  # fmt: skip
    start, end = float(r["start"]), float(r["end"])
    # Where the passage plays again in its track (retrieval.repeats): as long as the cited moment.
    also = [float(a) for a in r.get("also_at") or ()]
    return {
        "rank": r["rank"],
        "anchor": f"r{message_id}-{r['rank']}",
        "track_id": r["track_id"],
        "title": title,
        "composer": r.get("composer") or "Unknown composer",
        "era": r.get("era") or "",
        "work": r.get("work") or "",
        "start": start,
        "end": end,
        "range": describe.time_range(start, end),
        "likeness": likeness_of(r),
        "match": match_of(r),
        "why": why_sentence(r),
        "details": aspect_rows(r),
        "measured_reason": r.get("reason") or "",
        "moved_reason": r.get("moved_reason") or "",
        "key_shift": int(r.get("key_shift") or 0),
        "also_at": [
            {
                "start": a,
                "end": a + end - start,
                "at": describe.timestamp(a),
                "range": describe.time_range(a, a + end - start),
            }
            for a in also
        ],
        "picture": picture,
        "removed": removed,
    }
