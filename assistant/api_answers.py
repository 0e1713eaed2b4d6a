"""The typed answers of ``/api/*``: what the OpenAPI document shows and the controllers return.

Stored answers are plain JSON (the search's own ``to_json``); :func:`assistant.bodies.convert` turns
them into these at the edge (:func:`answer`), so a field the contract lacks never leaves the server unseen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from msgspec import Struct

from assistant.querystate import QueryState

T = TypeVar("T", bound=Struct)


def answer(data: Mapping[str, Any], into: type[T]) -> T:
    """Our own stored JSON as the typed answer ``into``. A mismatch is a bug of the server, not of the
    request: msgspec's ValidationError reaches the unexpected-error handler (logged, a plain 500)."""
    return msgspec.convert(data, into)


class MomentResult(Struct):
    """One result: a 10-s moment of a library track, and why it ranked there."""

    rank: int
    track_id: int
    start: float
    end: float
    segment_id: int = 0
    title: str = ""
    composer: str = ""
    work: str = ""
    era: str = ""
    file: str = ""  # the track's file name (never the server's path)
    score: float = 0.0
    match: float = 0.0  # probability this is the same passage as the query
    likeness: float = 0.0  # 0-100 against the library's own distribution
    components: dict[str, float] = {}
    aspects: dict[str, float] = {}
    descriptors: dict[str, Any] = {}
    key_shift: int = 0
    reason: str = ""
    moved: int = 0
    moved_reason: str = ""


class SearchAnswer(Struct):
    """What ``cadenza search --json`` prints: the measured query, and the results best first."""

    query: dict[str, Any]
    results: list[MomentResult]
    nothing_similar: bool = False
    timings_ms: dict[str, float] = {}


class ExplanationBody(Struct):
    markdown: str
    html: str
    used_llm: bool
    notice: str | None
    notes: list[str]
    flags: list[str]


class ChatAnswer(Struct):
    """A searched answer, explained."""

    conversation_id: str
    message_id: int
    parser: str | None  # "llm" | "rules" | "state" | None
    followup: dict[str, Any] | None
    request: dict[str, Any] | None
    response: SearchAnswer
    excluded: list[dict[str, Any]]
    state: QueryState
    state_notes: list[str]
    filter_reason: str | None
    explanation: ExplanationBody
    refined: bool
    refused: bool


class ChatRefusal(Struct):
    """A message answered without a search: ``reply`` says why and what can be asked."""

    conversation_id: str
    message_id: int | None
    parser: str | None
    refused: bool
    reply: str
    refined: bool
    state: QueryState | None


class PathStep(Struct):
    track_id: int
    start: float
    end: float
    title: str
    likeness: float


class PathResponse(Struct):
    steps: list[PathStep]


class ChatPathReply(Struct):
    """ "a path from #1 to #4": the reply, and the moments of the path."""

    conversation_id: str
    message_id: int | None
    parser: str | None
    reply: str
    path: PathResponse
    refused: bool
    refined: bool


class MapWindow(Struct):
    start: float
    likeness: float


class MapTrack(Struct):
    track_id: int | None  # null: the uploaded clip itself
    title: str
    duration_s: float
    own: bool
    windows: list[MapWindow]


class MapResponse(Struct):
    tracks: list[MapTrack]
