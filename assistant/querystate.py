"""The query state of an answer: what was searched for, as one typed record a listener can see and edit.

A :class:`QueryState` is a view of the stored :class:`~retrieval.types.SearchRequest` without its
audio: seeds (+), moments to move away from (−), filters, aspect weights, diversity, k and the mood
target. ``/api/chat`` returns it with every answer and accepts it back (:func:`state_from_json`,
:func:`apply_state`), the page shows it as chips (:func:`chips`) that each can be removed
(:func:`without_chip`). Pure functions; the database is the caller's business.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

import msgspec

from assistant.followup_schema import KEYS, MAX_K
from assistant.followups import request_from_json
from cadenza.errors import InputError
from retrieval.types import DEFAULT_DIVERSITY, DEFAULT_K, Aspects, Filters, MomentRef, SearchRequest, Weights


@dataclass(frozen=True)
class Moment:
    track_id: int
    start: float


class QueryState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one answer searched for. ``has_clip``: the conversation's own clip is a seed too.

    ``/api/chat`` returns it and takes it back as its ``state`` (decoded by msgspec, so the
    OpenAPI document shows its fields; :func:`state_from_json` checks ranges and names)."""

    noun: ClassVar[str] = "state field"

    has_clip: bool = False
    seeds: tuple[Moment, ...] = ()
    away: tuple[Moment, ...] = ()
    composers: tuple[str, ...] = ()
    exclude_composers: tuple[str, ...] = ()
    eras: tuple[str, ...] = ()
    exclude_eras: tuple[str, ...] = ()
    key: str | None = None
    mode: str | None = None
    min_bpm: float | None = None
    max_bpm: float | None = None
    tracks: tuple[int, ...] = ()
    exclude_tracks: tuple[int, ...] = ()
    weights: dict[str, float] = {}
    # Aspects of likeness (retrieval.types.Aspects): sound, harmony, rhythm, melody; missing = 1.
    aspects: dict[str, float] = {}
    diversity: float = DEFAULT_DIVERSITY
    k: int = DEFAULT_K
    mood_target: tuple[float, float] | None = None
    tempo_factor: float | None = None

    def to_json(self) -> dict[str, Any]:
        return msgspec.to_builtins(self)  # type: ignore[no-any-return]


def state_of(req: SearchRequest) -> QueryState:
    f = req.filters
    return QueryState(
        has_clip=req.audio is not None,
        seeds=tuple(Moment(m.track_id, m.start_s) for m in req.moments),
        away=tuple(Moment(m.track_id, m.start_s) for m in req.minus),
        composers=f.composers, exclude_composers=f.exclude_composers, eras=f.eras, exclude_eras=f.exclude_eras,
        key=f.key, mode=f.mode, min_bpm=f.min_bpm, max_bpm=f.max_bpm, tracks=f.tracks, exclude_tracks=f.exclude_tracks,
        weights=asdict(req.weights),
        aspects=asdict(req.aspects),
        diversity=round(req.diversity, 4),
        k=req.k,
        mood_target=req.target_mood,
        tempo_factor=req.tempo_factor,
    )  # fmt: skip


def state_of_json(request_json: dict[str, Any]) -> QueryState:
    """The state of a stored request (``followups.request_to_json``)."""
    state = state_of(request_from_json(request_json))
    return msgspec.structs.replace(state, has_clip=bool(request_json.get("has_audio")))


def apply_state(state: QueryState, base: SearchRequest) -> SearchRequest:
    """``base`` (which carries the audio, if any) searched as ``state`` says."""
    filters = Filters(
        composers=state.composers, exclude_composers=state.exclude_composers, works=base.filters.works,
        exclude_works=base.filters.exclude_works, eras=state.eras, exclude_eras=state.exclude_eras,
        tracks=state.tracks, exclude_tracks=state.exclude_tracks, key=state.key, mode=state.mode,
        min_bpm=state.min_bpm, max_bpm=state.max_bpm,
    )  # fmt: skip
    audio = base.audio if state.has_clip else None
    moments = tuple(MomentRef(m.track_id, m.start) for m in state.seeds)
    if audio is None and not moments:
        raise InputError(
            "the state has no seed: keep the clip (has_clip) or give a seed moment {track_id, start}"
        )
    return replace(
        base,
        audio=audio,
        start_s=base.start_s if audio is not None else None,
        moments=moments,
        minus=tuple(MomentRef(m.track_id, m.start) for m in state.away),
        filters=filters,
        weights=Weights(**{**asdict(Weights()), **state.weights}),
        aspects=Aspects(**{**asdict(Aspects()), **state.aspects}).validated(),
        diversity=state.diversity,
        k=state.k,
        target_mood=state.mood_target,
        tempo_factor=state.tempo_factor,
    )


# --- validation of a state sent by a client ----------------------------------------------------------


def _names(data: dict[str, Any], name: str) -> tuple[str, ...]:
    v = data.get(name) or []
    if (
        not isinstance(v, list | tuple)
        or not all(isinstance(x, str) and 0 < len(x) <= 200 for x in v)
        or len(v) > 50
    ):
        raise InputError(f"state.{name} must be a list of names")
    return tuple(v)


def _aspects(data: dict[str, Any]) -> dict[str, float]:
    raw = data.get("aspects") or {}
    names = set(asdict(Aspects()))
    if not isinstance(raw, dict) or set(raw) - names:
        raise InputError(f"state.aspects must be an object with some of {sorted(names)}")
    out = {n: _number(raw, n, 0.0, 10.0) for n in raw}
    return {n: float(v) for n, v in out.items() if v is not None}


def _ids(data: dict[str, Any], name: str) -> tuple[int, ...]:
    v = data.get(name) or []
    ok = isinstance(v, list | tuple) and len(v) <= 500
    if not ok or not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x < 2**63 for x in v):
        raise InputError(f"state.{name} must be a list of track ids")
    return tuple(v)


def _number(data: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    v = data.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"state.{name} must be a number between {lo:g} and {hi:g}")
    return float(v)


def _moments(data: dict[str, Any], name: str) -> tuple[Moment, ...]:
    v = data.get(name) or []
    if not isinstance(v, list | tuple) or len(v) > 20:
        raise InputError(f"state.{name} must be a list of moments {{track_id, start}}")
    out = []
    for m in v:
        tid = m.get("track_id") if isinstance(m, dict) else None
        start = m.get("start", 0.0) if isinstance(m, dict) else None
        if not (isinstance(tid, int) and not isinstance(tid, bool) and 0 < tid < 2**63):
            raise InputError(f"state.{name}: each moment needs a track_id (a whole number)")
        if (
            isinstance(start, bool)
            or not isinstance(start, int | float)
            or not math.isfinite(start)
            or start < 0
        ):
            raise InputError(f"state.{name}: each moment's start must be a number of seconds ≥ 0")
        out.append(Moment(tid, float(start)))
    return tuple(out)


_FIELDS = set(QueryState.__struct_fields__)


def state_from_json(data: Any) -> QueryState:
    """A state sent back by a client; :class:`InputError` naming the field when it does not fit."""
    if not isinstance(data, dict):
        raise InputError("state must be an object, as /api/chat returned it")
    unknown = set(data) - _FIELDS
    if unknown:
        raise InputError(f"unknown state field(s) {sorted(unknown)}; use {sorted(_FIELDS)}")
    key = data.get("key")
    if key is not None and key not in KEYS:
        raise InputError(f"state.key must be one of {', '.join(KEYS)}")
    mode = data.get("mode")
    if mode not in (None, "major", "minor"):
        raise InputError("state.mode must be 'major' or 'minor'")
    k = data.get("k", DEFAULT_K)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InputError(f"state.k must be a whole number between 1 and {MAX_K}")
    weights = data.get("weights") or {}
    allowed_w = set(asdict(Weights()))
    if not isinstance(weights, dict) or set(weights) - allowed_w:
        raise InputError(f"state.weights must be an object with some of {sorted(allowed_w)}")
    w = {n: _number(weights, n, 0.0, 10.0) for n in weights}
    mood = data.get("mood_target")
    if mood is not None:
        ok = isinstance(mood, list | tuple) and len(mood) == 2
        if not ok or any(
            isinstance(x, bool) or not isinstance(x, int | float) or not -1 <= x <= 1 for x in mood
        ):
            raise InputError("state.mood_target must be [valence, arousal], each between -1 and 1")
        mood = (float(mood[0]), float(mood[1]))
    has_clip = data.get("has_clip", False)
    if not isinstance(has_clip, bool):
        raise InputError("state.has_clip must be true or false")
    state = QueryState(
        has_clip=has_clip, seeds=_moments(data, "seeds"), away=_moments(data, "away"),
        composers=_names(data, "composers"), exclude_composers=_names(data, "exclude_composers"),
        eras=_names(data, "eras"), exclude_eras=_names(data, "exclude_eras"), key=key, mode=mode,
        min_bpm=_number(data, "min_bpm", 20, 300), max_bpm=_number(data, "max_bpm", 20, 300),
        tracks=_ids(data, "tracks"), exclude_tracks=_ids(data, "exclude_tracks"),
        weights={n: v for n, v in w.items() if v is not None},
        aspects=_aspects(data),
        diversity=_number(data, "diversity", 0.0, 1.0) or 0.0 if data.get("diversity") is not None else DEFAULT_DIVERSITY,
        k=k, mood_target=mood, tempo_factor=_number(data, "tempo_factor", 0.25, 4.0),
    )  # fmt: skip
    return state


# --- contradictions and changes, in words ------------------------------------------------------------


def contradiction(f: Filters) -> str | None:
    """Why no track can pass ``f``, when that follows from the filters alone."""
    for kind, only, excluded in (
        ("composer", f.composers, f.exclude_composers),
        ("era", f.eras, f.exclude_eras),
    ):
        both = sorted({n.lower() for n in only} & {n.lower() for n in excluded})
        names = [n for n in only if n.lower() in both]
        if names and len(names) == len(only):
            who = " or ".join(names)
            return (
                f"no track is by {who} and not by {who}"
                if kind == "composer"
                else f"no track is {who} and not {who}"
            )
    if f.min_bpm is not None and f.max_bpm is not None and f.min_bpm > f.max_bpm:
        return f"no tempo is at least {f.min_bpm:g} and at most {f.max_bpm:g} BPM"
    if f.tracks and set(f.tracks) <= set(f.exclude_tracks):
        return "every track the search is limited to is also left out"
    return None


def _tempo_label(lo: float | None, hi: float | None) -> str | None:
    if lo is not None and hi is not None:
        return f"{lo:g}–{hi:g} BPM"
    if lo is not None:
        return f"at least {lo:g} BPM"
    if hi is not None:
        return f"at most {hi:g} BPM"
    return None


def filter_labels(f: Filters) -> dict[str, str | None]:
    key = " ".join(x for x in (f.key, f.mode) if x) or None
    comp = "; ".join(
        [*(["only " + ", ".join(f.composers)] if f.composers else []),
         *(["not " + ", ".join(f.exclude_composers)] if f.exclude_composers else [])]
    ) or None  # fmt: skip
    era = "; ".join(
        [*(["only " + ", ".join(f.eras)] if f.eras else []), *(["not " + ", ".join(f.exclude_eras)] if f.exclude_eras else [])]
    ) or None  # fmt: skip
    return {"composer": comp, "era": era, "key": key, "tempo": _tempo_label(f.min_bpm, f.max_bpm)}


def changes(before: SearchRequest, after: SearchRequest) -> list[str]:
    """What a follow-up replaced or cleared, in words ("composer: only Bach → not Bach")."""
    out = []
    a, b = filter_labels(before.filters), filter_labels(after.filters)
    for name, old in a.items():
        new = b[name]
        if old and new != old:
            out.append(
                f"Replaced the {name} filter ({old}) with {new}."
                if new
                else f"Cleared the {name} filter ({old})."
            )
    return out


# --- chips ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chip:
    id: str  # what :func:`without_chip` takes
    label: str
    kind: str  # "seed" | "away" | "filter" | "setting"


def chips(state: QueryState, titles: dict[int, str] | None = None) -> list[Chip]:
    """One chip per part of the state that differs from a plain search."""
    titles = titles or {}
    out: list[Chip] = []

    def moment(m: Moment) -> str:
        mm, ss = divmod(int(m.start), 60)
        return f"{titles.get(m.track_id, f'track {m.track_id}')} {mm}:{ss:02d}"

    if state.has_clip:
        out.append(Chip("clip", "+ your clip", "seed"))
    out += [Chip(f"seed:{i}", f"+ {moment(m)}", "seed") for i, m in enumerate(state.seeds)]
    out += [Chip(f"away:{i}", f"− {moment(m)}", "away") for i, m in enumerate(state.away)]
    out += [Chip(f"composer:{n}", f"only {n}", "filter") for n in state.composers]
    out += [Chip(f"exclude_composer:{n}", f"not {n}", "filter") for n in state.exclude_composers]
    out += [Chip(f"era:{n}", f"only {n}", "filter") for n in state.eras]
    out += [Chip(f"exclude_era:{n}", f"not {n}", "filter") for n in state.exclude_eras]
    if state.key or state.mode:
        out.append(
            Chip(
                "key",
                " ".join(x for x in (state.key, state.mode) if x) + (" keys" if not state.key else ""),
                "filter",
            )
        )
    tempo = _tempo_label(state.min_bpm, state.max_bpm)
    if tempo:
        out.append(Chip("tempo", tempo, "filter"))
    if state.tempo_factor:
        out.append(Chip("tempo_factor", "slower" if state.tempo_factor < 1 else "faster", "setting"))
    out += [Chip(f"track:{t}", f"only {titles.get(t, f'track {t}')}", "filter") for t in state.tracks]
    out += [
        Chip(f"exclude_track:{t}", f"not {titles.get(t, f'track {t}')}", "filter")
        for t in state.exclude_tracks
    ]
    default_w = asdict(Weights())
    if any(
        abs(state.weights.get(n, v) - v) > 1e-9
        for n, v in default_w.items()
        if n not in ("mood", "discovery")
    ):
        h = state.weights.get("harmony", default_w["harmony"])
        out.append(
            Chip(
                "aspects",
                "harmony weighted up" if h > default_w["harmony"] else "timbre weighted up",
                "setting",
            )
        )
    if state.weights.get("discovery", 0.0) > 0:
        out.append(Chip("discovery", "composers you have not heard", "setting"))
    if state.mood_target is not None:
        v, a = state.mood_target
        out.append(Chip("mood", f"mood target valence {v:+.1f}, arousal {a:+.1f}", "setting"))
    if abs(state.diversity - QueryState().diversity) > 1e-9:
        out.append(Chip("diversity", f"diversity {state.diversity:.1f}", "setting"))
    if state.k != QueryState().k:
        out.append(Chip("k", f"{state.k} results", "setting"))
    return out


def without_chip(state: QueryState, chip_id: str) -> QueryState:
    """``state`` with the part a chip shows removed; InputError for an unknown chip."""
    kind, _, arg = chip_id.partition(":")
    d = QueryState()

    def drop(xs: tuple[Any, ...], x: Any) -> tuple[Any, ...]:
        return tuple(v for v in xs if str(v) != str(x))

    def index(xs: tuple[Any, ...]) -> int:
        if not arg.isdigit() or int(arg) >= len(xs):
            raise InputError(f"there is no chip {chip_id!r} in this answer")
        return int(arg)

    simple: dict[str, dict[str, Any]] = {
        "clip": {"has_clip": False},
        "key": {"key": None, "mode": None},
        "tempo": {"min_bpm": None, "max_bpm": None},
        "tempo_factor": {"tempo_factor": None},
        "mood": {"mood_target": None, "weights": {**state.weights, "mood": 0.0}},
        "discovery": {"weights": {**state.weights, "discovery": 0.0}},
        "aspects": {"weights": {**asdict(Weights()), "mood": state.weights.get("mood", 0.0), "discovery": state.weights.get("discovery", 0.0)}},
        "diversity": {"diversity": d.diversity},
        "k": {"k": d.k},
    }  # fmt: skip
    if kind in simple and not arg:
        return msgspec.structs.replace(state, **simple[kind])
    if kind == "seed":
        i = index(state.seeds)
        return msgspec.structs.replace(state, seeds=state.seeds[:i] + state.seeds[i + 1 :])
    if kind == "away":
        i = index(state.away)
        return msgspec.structs.replace(state, away=state.away[:i] + state.away[i + 1 :])
    lists = {
        "composer": "composers", "exclude_composer": "exclude_composers", "era": "eras",
        "exclude_era": "exclude_eras", "track": "tracks", "exclude_track": "exclude_tracks",
    }  # fmt: skip
    if kind in lists and arg:
        name = lists[kind]
        kw: dict[str, Any] = {name: drop(getattr(state, name), arg)}
        return msgspec.structs.replace(state, **kw)
    raise InputError(f"there is no chip {chip_id!r} in this answer")
