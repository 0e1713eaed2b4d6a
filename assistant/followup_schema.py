"""What a chat message asks of the last search: the :class:`FollowUp` record and its JSON schema.

Both parsers produce this one record: the rule parser (:mod:`assistant.rules`) and the language
model, whose ``refine_search`` tool takes exactly :data:`FOLLOWUP_SCHEMA` as its parameters — so
the two paths cannot drift apart. :func:`assistant.followups.apply_followup` turns it into the
next search request.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import jsonschema

from retrieval.types import MAX_K

ERAS = ("Medieval", "Renaissance", "Baroque", "Classical", "Romantic", "Modern", "Contemporary", "Folk")
SLOWER_FACTOR = 0.8
FASTER_FACTOR = 1.25
#: mood direction → (Δvalence, Δarousal) added to the query's mood, in [-1, 1] units.
MOOD_SHIFTS = {
    "happier": (0.5, 0.1),
    "sadder": (-0.5, -0.1),
    "calmer": (0.0, -0.5),
    "more energetic": (0.0, 0.5),
}
#: Tonic names a key filter takes (the search also accepts the enharmonic spellings).
KEYS = ("C", "C#", "Db", "D", "D#", "Eb", "E", "F", "F#", "Gb", "G", "G#", "Ab", "A", "A#", "Bb", "B")
#: Parts of the query state a message can clear ("any composer", "clear the filters").
CLEARABLE = ("composers", "eras", "key", "tempo", "tracks", "mood", "all")
#: Diversity a message asks for: "same composer is fine" → LESS, "more variety" → MORE (0 = off, 1 = max).
DIVERSITY_LESS = 0.0
DIVERSITY_MORE = 0.7


@dataclass(frozen=True)
class FollowUp:
    """What a message asks of the last search. Ranks are 1-based result numbers."""

    like: tuple[int, ...] = ()  # results to move towards ("like #2", "more like this" → 1)
    unlike: tuple[int, ...] = ()  # results to move away from ("not #3")
    keep_query: bool = True  # keep the previous query as a reference
    different_composer: bool = False  # exclude composers of the last answer
    unheard_composers: bool = False  # favour composers this listener has not played
    only_composers: tuple[str, ...] = ()
    exclude_composers: tuple[str, ...] = ()
    only_eras: tuple[str, ...] = ()
    exclude_eras: tuple[str, ...] = ()
    same_mood: bool = False
    mood_shift: str | None = None  # "happier" | "sadder" | "calmer" | "more energetic"
    tempo: str = "any"  # "any" | "slower" | "faster" (relative to the query)
    mode: str | None = None  # "major" | "minor"
    emphasis: str = "balanced"  # "balanced" | "harmony" | "timbre"
    k: int | None = None
    key: str | None = None  # tonic of a key filter ("in D major" → "D")
    min_bpm: float | None = None  # "over 120 bpm", "between 60 and 90 bpm"
    max_bpm: float | None = None  # "under 100"
    diversity: float | None = None  # "more variety" / "same composer is fine"
    clear: tuple[str, ...] = ()  # parts of the state to drop, from CLEARABLE

    @property
    def only_excludes(self) -> bool:
        """Nothing but "not #3" / "drop the second": the listener takes results out of the answer.

        Such a follow-up refines the answer in place (see ``assistant.chat``) instead of starting a
        new turn; anything else in the message ("not #3, only Baroque") makes it a new search.
        """
        return bool(self.unlike) and replace(self, unlike=()) == FollowUp()

    @property
    def empty(self) -> bool:
        """Asks for nothing at all: the same search would simply run again."""
        return self == FollowUp()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FollowUp:
        """From tool-call arguments already validated against :data:`FOLLOWUP_SCHEMA`."""
        tuples = {f.name for f in fields(cls) if str(f.type).startswith("tuple")}
        kw: dict[str, Any] = {}
        for name, value in data.items():
            if name in ("like", "unlike"):
                kw[name] = tuple(int(v) for v in value)
            elif name in tuples:
                kw[name] = tuple(str(v) for v in value)
            elif name in ("min_bpm", "max_bpm", "diversity") and value is not None:
                kw[name] = float(value)
            else:
                kw[name] = value
        return cls(**kw)


_RANKS = {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": MAX_K}, "maxItems": 10}
_NAMES = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 100}, "maxItems": 20}
_BPM = {"type": ["number", "null"], "minimum": 20, "maximum": 300}

#: JSON schema of the ``refine_search`` tool's arguments (and of FollowUp.to_json()).
FOLLOWUP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "like": {**_RANKS, "description": "result numbers to find more like (#2 -> 2; 'this' -> 1)"},
        "unlike": {
            **_RANKS,
            "description": "result numbers to take out ('not #3' -> 3; 'not this one' -> 1)",
        },
        "keep_query": {"type": "boolean", "description": "keep the previous query as a reference"},
        "different_composer": {"type": "boolean", "description": "exclude composers already shown"},
        "unheard_composers": {
            "type": "boolean",
            "description": "prefer composers the listener has not heard",
        },
        "only_composers": {**_NAMES, "description": "restrict to these composers (replaces the last list)"},
        "exclude_composers": {**_NAMES, "description": "exclude these composers"},
        "only_eras": {**_NAMES, "description": f"restrict to these eras, from {', '.join(ERAS)}"},
        "exclude_eras": {**_NAMES, "description": "exclude these eras"},
        "same_mood": {"type": "boolean", "description": "match the mood (valence/arousal) of the query"},
        "mood_shift": {
            "type": ["string", "null"],
            "enum": [*MOOD_SHIFTS, None],
            "description": "move the mood away from the query's in this direction",
        },
        "tempo": {
            "type": "string",
            "enum": ["any", "slower", "faster"],
            "description": "relative to the query",
        },
        "mode": {"type": ["string", "null"], "enum": ["major", "minor", None]},
        "emphasis": {"type": "string", "enum": ["balanced", "harmony", "timbre"]},
        "k": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_K, "description": "how many results"},
        "key": {"type": ["string", "null"], "enum": [*KEYS, None], "description": "tonic of a key filter"},
        "min_bpm": {**_BPM, "description": "slowest tempo allowed, beats per minute"},
        "max_bpm": {**_BPM, "description": "fastest tempo allowed, beats per minute"},
        "diversity": {
            "type": ["number", "null"],
            "minimum": 0,
            "maximum": 1,
            "description": f"variety among results: {DIVERSITY_LESS} 'same composer is fine' .. "
            f"{DIVERSITY_MORE} 'more variety'",
        },
        "clear": {
            "type": "array",
            "items": {"type": "string", "enum": list(CLEARABLE)},
            "maxItems": len(CLEARABLE),
            "description": "parts of the search to drop ('any composer' -> composers; 'clear filters' -> all)",
        },
    },
}

REFINE_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "refine_search",
        "description": "Refine the listener's last music-moment search from their follow-up message.",
        "parameters": FOLLOWUP_SCHEMA,
    },
}


def validate_followup(data: Any) -> FollowUp:
    """Validate tool-call arguments against the schema; ValueError when they do not conform."""
    try:
        jsonschema.validate(data, FOLLOWUP_SCHEMA)
    except jsonschema.ValidationError as exc:
        raise ValueError(f"follow-up arguments do not match the schema: {exc.message}") from None
    fu = FollowUp.from_json(data)
    if fu.min_bpm is not None and fu.max_bpm is not None and fu.min_bpm > fu.max_bpm:
        raise ValueError("follow-up arguments ask for min_bpm above max_bpm")
    return fu
