"""The typed requests of ``/api/*``: what the OpenAPI document shows, and what the controllers
decode into (the answers are :mod:`assistant.api_answers`).

A field's description is also the 400 message for a value it refuses (:mod:`assistant.bodies`), so
it is written as that message. Checks no type can say (a track id below 2**63, a finite number) are
the ``*_of`` functions here, with the same words.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

import msgspec
from msgspec import Meta, Struct

from assistant.bodies import convert
from assistant.followup_schema import KEYS
from assistant.querystate import QueryState
from cadenza.errors import InputError
from retrieval.moment_map import DEFAULT_MAP_TRACKS
from retrieval.types import DEFAULT_K, MAX_K, Aspects, Filters, MomentRef

#: The largest id PostgreSQL's bigint holds, plus one.
ID_LIMIT = 2**63
CONTEXT_HINT = 'must be an object, e.g. {"time_of_day": false, "history": true, "mood": true}'
CLIP_FIELD = Meta(
    description="the clip: an audio file (MP3, WAV, OGG, FLAC, …)", extra_json_schema={"format": "binary"}
)
TRACK_AND_START = "track_id must be a whole number (a track id) and start a number of seconds"

# A description that starts with "must" is said after the field's name ("k must be …", see
# assistant.bodies); any other is the whole message.
Names = Annotated[list[str], Meta(description="must be a list of names")]
Seconds = Annotated[float, Meta(ge=0, description="must be a number of seconds ≥ 0")]
K = Annotated[int, Meta(ge=1, le=MAX_K, description=f"must be a whole number between 1 and {MAX_K}")]
Diversity = Annotated[float, Meta(ge=0, le=1, description="must be a number between 0 and 1")]
Weight = Annotated[float, Meta(description="must be a number between 0 and 10")]
Switch = Annotated[bool, Meta(description="must be true or false")]
Bpm = Annotated[float, Meta(description="must be a number of beats per minute")]
Text = Annotated[str, Meta(description="must be text")]
ConversationId = Annotated[str, Meta(description="must be a conversation id")]
LocalTime = Annotated[
    str, Meta(description="must be text: HH:MM on a 24-hour clock (e.g. 23:10) or an ISO 8601 date-time")
]
ContextText = Annotated[
    str, Meta(description='must be the context object as JSON text, e.g. {"mood": false}')
]
Key = Annotated[
    str, Meta(pattern=f"^({'|'.join(KEYS)})$", description=f"must be a tonic, one of {', '.join(KEYS)}")
]
Mode = Annotated[Literal["major", "minor"], Meta(description="must be 'major' or 'minor'")]
Tracks = Annotated[int, Meta(description="must be a whole number")]


class Moment(Struct, forbid_unknown_fields=True):
    """A library moment: the 10 s of track ``track_id`` from ``start`` seconds."""

    track_id: Annotated[int, Meta(description=TRACK_AND_START)]
    start: Annotated[float, Meta(description=TRACK_AND_START)] = 0.0


Reference = Annotated[Moment, Meta(description="must be an object {track_id, start}")]


def moment_of(m: Moment, name: str) -> MomentRef:
    """``m`` as a MomentRef, or InputError when it is no track id or no time in seconds."""
    if not 0 < m.track_id < ID_LIMIT or not math.isfinite(m.start) or m.start < 0:
        raise InputError(f"{name}.track_id must be a track id and {name}.start a number of seconds ≥ 0")
    return MomentRef(track_id=m.track_id, start_s=float(m.start))


class FilterBody(Struct, forbid_unknown_fields=True):
    """Which tracks may be results. Every list is of names as the library spells them (any case)."""

    noun: ClassVar[str] = "filter"

    composers: Names | None = None
    exclude_composers: Names | None = None
    eras: Names | None = None
    exclude_eras: Names | None = None
    exclude_tracks: (
        Annotated[list[Annotated[int, Meta(gt=0)]], Meta(description="must be a list of track ids")] | None
    ) = None
    key: Key | None = None
    mode: Mode | None = None
    min_bpm: Bpm | None = None
    max_bpm: Bpm | None = None


def filters_of(body: FilterBody | None) -> Filters:
    if body is None:
        return Filters()
    for name in ("min_bpm", "max_bpm"):
        value = getattr(body, name)
        if value is not None and not math.isfinite(value):
            raise InputError(f"filters.{name} must be a finite number")
    if body.exclude_tracks and not all(t < ID_LIMIT for t in body.exclude_tracks):
        raise InputError("filters.exclude_tracks must be a list of track ids")
    return Filters(
        composers=tuple(body.composers or ()), exclude_composers=tuple(body.exclude_composers or ()),
        eras=tuple(body.eras or ()), exclude_eras=tuple(body.exclude_eras or ()),
        exclude_tracks=tuple(body.exclude_tracks or ()), key=body.key, mode=body.mode,
        min_bpm=body.min_bpm, max_bpm=body.max_bpm,
    )  # fmt: skip


class AspectsBody(Struct, forbid_unknown_fields=True):
    """How much each aspect of likeness counts, 0–10 (1 = as usual, 0 = ignore it); at least one above 0."""

    noun: ClassVar[str] = "aspect"

    sound: Weight = 1.0
    harmony: Weight = 1.0
    rhythm: Weight = 1.0
    melody: Weight = 1.0


def aspects_of(body: AspectsBody | None) -> Aspects | None:
    return None if body is None else Aspects(**msgspec.structs.asdict(body)).validated()


class ContextSwitches(Struct, forbid_unknown_fields=True):
    """Listening-context switches to change; a signal left out (null) keeps its setting."""

    noun: ClassVar[str] = "context signal"

    time_of_day: Switch | None = None
    history: Switch | None = None
    mood: Switch | None = None

    def changes(self) -> dict[str, bool]:
        return {k: v for k, v in msgspec.structs.asdict(self).items() if v is not None}


def switches_of(body: ContextSwitches | None) -> dict[str, bool] | None:
    """The switches a request sets (None: it sends no context object)."""
    return None if body is None else body.changes()


# --- requests ----------------------------------------------------------------------------------


AspectsObject = Annotated[AspectsBody, Meta(description='must be an object, e.g. {"sound": 1, "harmony": 0}')]
ContextObject = Annotated[ContextSwitches, Meta(description=CONTEXT_HINT)]


class Listening(Struct):
    """How a search ranks, sent with it: variety, aspect weights, context switches, the local time."""

    diversity: Diversity | None = None
    aspects: AspectsObject | None = None
    context: ContextObject | None = None
    local_time: LocalTime | None = None


class SearchBody(Listening):
    """A search from a library moment. A clip is sent as a multipart form instead (:class:`SearchForm`)."""

    reference: Reference | None = None
    k: K = DEFAULT_K
    filters: (
        Annotated[FilterBody, Meta(description='must be an object, e.g. {"eras": ["Baroque"]}')] | None
    ) = None


class FormAspects(Struct):
    """The aspect weights as form fields (0–10 each; a missing one is 1)."""

    aspect_sound: Weight | None = None
    aspect_harmony: Weight | None = None
    aspect_rhythm: Weight | None = None
    aspect_melody: Weight | None = None

    def aspects(self) -> AspectsBody | None:
        """The weights given (a missing one is 1), None when the form gives none."""
        given = {n: getattr(self, f"aspect_{n}") for n in ("sound", "harmony", "rhythm", "melody")}
        given = {n: v for n, v in given.items() if v is not None}
        return AspectsBody(**given) if given else None


class SearchForm(FormAspects):
    """A search from a clip (multipart). Repeat ``composer``, ``era`` … for several names."""

    file: Annotated[bytes, CLIP_FIELD] | None = None
    start: Seconds | None = None
    # Checked against the encoder's windowing and the clip limits by the route (they are the server's).
    duration: Annotated[float, Meta(description="must be a number of seconds")] | None = None
    k: K = DEFAULT_K
    composer: Names = []
    exclude_composer: Names = []
    era: Names = []
    exclude_era: Names = []
    key: Key | None = None
    mode: Mode | None = None
    min_bpm: Bpm | None = None
    max_bpm: Bpm | None = None
    route: Annotated[
        Literal["auto", "melody", "audio"],
        Meta(description="must be auto, melody (a hum or single line, in any key) or audio"),
    ] = "auto"
    diversity: Diversity | None = None
    context: ContextText | None = None
    local_time: LocalTime | None = None

    def filters(self) -> Filters:
        return filters_of(
            FilterBody(
                composers=self.composer or None, exclude_composers=self.exclude_composer or None,
                eras=self.era or None, exclude_eras=self.exclude_era or None, key=self.key, mode=self.mode,
                min_bpm=self.min_bpm, max_bpm=self.max_bpm,
            )
        )  # fmt: skip


def context_of_text(raw: str | None) -> ContextSwitches | None:
    """A form's ``context`` field: the same object as JSON text."""
    if raw is None:
        return None
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise InputError('the context field must be JSON, e.g. {"time_of_day": false}') from None
    if not isinstance(data, dict):
        raise InputError(f"context {CONTEXT_HINT}")
    return convert(data, ContextSwitches)


class ChatBody(Listening):
    """One chat message: a follow-up, a named moment, a reference moment, or an edited ``state``."""

    message: Text | None = None
    conversation_id: ConversationId | None = None
    reference: Reference | None = None
    k: K | None = None
    start: Seconds | None = None
    state: Annotated[QueryState, Meta(description="must be an object, as /api/chat returned it")] | None = (
        None
    )


class FormMessage(FormAspects):
    """The fields a chat message has as a form, on the page and in the API."""

    text: Text = ""
    conversation_id: ConversationId | None = None
    start: Seconds | None = None
    k: K | None = None
    diversity: Diversity | None = None
    local_time: LocalTime | None = None


class ChatForm(FormMessage):
    """One chat message with a clip (multipart); ``text`` is an older name of ``message``."""

    file: Annotated[bytes, CLIP_FIELD] | None = None
    message: Text | None = None
    context: ContextText | None = None


class PutBackBody(Struct):
    """Put a left-out track back into the answer ``message_id`` of a conversation."""

    conversation_id: ConversationId = ""
    message_id: Annotated[
        int, Meta(gt=0, description="message_id and track_id must be ids (whole numbers)")
    ] = 0
    track_id: Annotated[
        int, Meta(gt=0, description="message_id and track_id must be ids (whole numbers)")
    ] = 0


class ContextChange(Struct):
    """Switch context signals for a conversation and rank one of its answers again with them."""

    conversation_id: str
    message_id: int
    context: ContextSwitches


class MapBody(Struct):
    """A moment map around a library moment. A clip is sent as a multipart form instead (:class:`MapForm`)."""

    reference: Reference
    tracks: Tracks = DEFAULT_MAP_TRACKS


class MapForm(Struct):
    """A moment map around a clip (multipart): at most 120 s of the clip, from ``start``."""

    file: Annotated[bytes, CLIP_FIELD] | None = None
    start: Seconds | None = None
    tracks: Tracks = DEFAULT_MAP_TRACKS


class PathRequest(Struct):
    """A moment path from one library moment to another, in ``steps`` moments (both ends included)."""

    from_: Moment = msgspec.field(name="from")
    to: Moment
    steps: int = 5
