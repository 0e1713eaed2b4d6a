"""The typed answers of ``/api/*``: what the OpenAPI document shows and the controllers return.

Stored answers are plain JSON (the search's own ``to_json``); :func:`assistant.bodies.convert` turns
them into these at the edge (:func:`answer`), so a field the contract lacks never leaves the server unseen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, Struct

from assistant.bodies import Maybe
from assistant.followup_schema import FollowUp
from assistant.followups import StoredRequest
from assistant.querystate import QueryState
from retrieval.types import Aspects, Context

T = TypeVar("T")


def answer(data: Mapping[str, Any] | list[Any], into: type[T]) -> T:
    """Our own stored JSON as the typed answer ``into``. A mismatch is a bug of the server, not of the
    request: msgspec's ValidationError reaches the unexpected-error handler (logged, a plain 500)."""
    return msgspec.convert(data, into)


class MomentDescriptors(Struct):
    """What was measured for a moment, a result's or the query's (the melody route adds the key it
    heard sung)."""

    key_index: Maybe[int | None] = UNSET  # 0 = C … 11 = B
    key: Maybe[str | None] = UNSET
    mode: Maybe[str | None] = UNSET  # "major" | "minor"
    key_confidence: Maybe[float | None] = UNSET
    tempo_bpm: Maybe[float | None] = UNSET
    loudness_db: Maybe[float | None] = UNSET
    brightness_hz: Maybe[float | None] = UNSET
    onset_density: Maybe[float | None] = UNSET
    valence: Maybe[float | None] = UNSET  # [-1, 1]
    arousal: Maybe[float | None] = UNSET  # [-1, 1]
    sung_key: Maybe[str | None] = UNSET


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
    descriptors: MomentDescriptors = msgspec.field(default_factory=MomentDescriptors)
    key_shift: int = 0
    reason: str = ""
    moved: int = 0
    moved_reason: str = ""
    # Other starts (seconds) where this passage plays again in its track, note for note
    # (retrieval.repeats); empty unless this result is the query's own passage.
    also_at: list[float] = []


class Tune(Struct):
    """How much of the query clip is one voice (the melody route's test, retrieval.melody_search)."""

    voiced_share: float
    harmonic_share: float
    single_voice: bool


class ContextSignal(Struct):
    """What one listening-context signal did to the answer, against the same answer without it."""

    signal: str  # "time_of_day" | "history" | "mood"
    on: bool
    applied: bool
    text: str
    changed_ranks: int
    brought_in: int
    weight: Maybe[float] = UNSET
    day_part: Maybe[str] = UNSET
    composers_moved_down: Maybe[int] = UNSET
    target: Maybe[list[float]] = UNSET  # (valence, arousal)


class ContextReport(Struct):
    switches: Context
    local_time: str | None  # HH:MM, the listener's
    signals: list[ContextSignal]


class QueryInfo(MomentDescriptors, kw_only=True):
    """The query as measured: where the moment is, what it sounds like, and how it was searched.

    ``source`` "audio" (a clip), "moment" (a library moment) or "blend"; each kind and route
    carries its own keys, so most are absent from some answers."""

    source: str
    start: Maybe[float] = UNSET
    end: Maybe[float] = UNSET
    clip_seconds: Maybe[float] = UNSET
    track_id: Maybe[int] = UNSET
    title: Maybe[str] = UNSET
    composer: Maybe[str] = UNSET
    chroma_mean: Maybe[list[float]] = UNSET
    tonalness: Maybe[float] = UNSET
    input_dbfs: Maybe[float] = UNSET
    flatness: Maybe[float] = UNSET
    moment_source: Maybe[str] = UNSET  # "audio" | "stored-segment"
    moment_sources: Maybe[list[str]] = UNSET
    fallback_reason: Maybe[str] = UNSET
    model_version: Maybe[str] = UNSET
    nothing_reason: Maybe[str] = UNSET
    route: Maybe[str] = UNSET  # "audio" | "melody"
    route_reason: Maybe[str] = UNSET  # why a clip that sounded like one voice went the audio route
    melody: Maybe[Tune] = UNSET
    melody_windows: Maybe[int] = UNSET
    melody_missing_windows: Maybe[int] = UNSET
    melody_key_shift: Maybe[int] = UNSET
    melody_tempo: Maybe[float] = UNSET
    matched_key: Maybe[str | None] = UNSET
    context: Maybe[ContextReport] = UNSET
    ann: Maybe[str] = UNSET  # the candidate route: "hnsw", "cells", "exact", …
    candidates: Maybe[int] = UNSET
    timbre_candidates: Maybe[int] = UNSET  # rows the timbre index added (the sound aspect's second source)
    harmony_candidates: Maybe[int] = UNSET  # tracks the harmony index added (chord sequence: distorted clips)
    band_limited: Maybe[bool] = UNSET  # the clip lost its bass: aligned with the phone band too
    calibrated: Maybe[bool] = UNSET
    diversity: Maybe[float] = UNSET
    aspects: Maybe[Aspects] = UNSET
    key_probes: Maybe[list[int]] = UNSET  # semitones the query was searched at
    discovery_rate: Maybe[float] = UNSET


class SearchAnswer(Struct):
    """What ``cadenza search --json`` prints: the measured query, and the results best first."""

    query: QueryInfo
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


class LeftOut(Struct):
    """A track the answer leaves out ("not #3"), as it stood in the answer it was taken from."""

    track_id: int
    title: str
    composer: str
    rank: int


class ChatAnswer(Struct):
    """A searched answer, explained."""

    conversation_id: str
    message_id: int
    parser: str | None  # "llm" | "rules" | "state" | None
    followup: FollowUp | None
    request: StoredRequest | None
    response: SearchAnswer
    excluded: list[LeftOut]
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
