"""Listening context: time of day, listening history and mood as small rerank terms, and what each did.

Three signals may move a ranking; none is a filter (every moment stays reachable):

- **time of day**: the listener's local hour falls in a :class:`DayPart` whose target (valence,
  arousal, loudness on the mood scale of :mod:`retrieval.descriptors`) is set by hand — calmer and
  softer late at night, brighter in the morning — and each candidate gets its closeness to it
  (:func:`retrieval.similarity.time_of_day_fit`) at weight :data:`TIME_OF_DAY_WEIGHT`;
- **history**: composers the listener has played score a little lower (the discovery term, at
  least :data:`HISTORY_WEIGHT`; "composers I haven't heard" asks for more);
- **mood**: the mood a follow-up asked for ("calmer", "same mood") as the mood term.

Each has a switch on the request (:class:`retrieval.types.Context`). A signal switched off adds no
term at all, so the ranking is exactly the one without it. :func:`report` says, per signal, whether
it was on, whether it applied, and what it changed: the same candidates are ranked once more
without that term (:func:`retrieval.rerank.combined_score` leaves a term out bit for bit), so the
counts describe exactly what switching it off would show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from retrieval.diversity import mmr, nms
from retrieval.rerank import Candidate, combined_score
from retrieval.types import SearchRequest, Weights

#: Weight of the time-of-day term (embedding similarity has weight 1): a nudge between moments that
#: are about as similar, never enough to lift a poor match (bench/results/context.md measures it).
TIME_OF_DAY_WEIGHT = 0.1
#: Least weight of the history term when the listener has played something.
HISTORY_WEIGHT = 0.1

#: The context signals in the order they are shown, and the rerank term each adds.
SIGNAL_TERMS = {"time_of_day": "time_of_day", "history": "discovery", "mood": "mood"}
SIGNAL_NAMES = {"time_of_day": "time of day", "history": "listening history", "mood": "mood"}


@dataclass(frozen=True)
class DayPart:
    name: str
    start_hour: float  # inclusive, local time
    end_hour: float  # exclusive
    favours: str  # what the target favours, in words
    target: tuple[float, float, float]  # (valence, arousal, loudness unit), each in [-1, 1]


#: Set, not learned: a gentle arc over the day on the measured descriptors. Loudness and arousal
#: fall towards night; valence (major, bright) is highest in the morning.
DAY_PARTS: tuple[DayPart, ...] = (
    DayPart("night", 0.0, 5.0, "quiet, calm moments", (0.0, -0.7, -0.7)),
    DayPart("morning", 5.0, 11.0, "brighter, lighter moments", (0.5, 0.0, -0.2)),
    DayPart("afternoon", 11.0, 17.0, "livelier moments", (0.2, 0.4, 0.2)),
    DayPart("evening", 17.0, 21.0, "mellower moments", (0.1, -0.2, -0.2)),
    DayPart("late evening", 21.0, 24.0, "calmer, softer moments", (0.0, -0.5, -0.5)),
)


def day_part(hour: float) -> DayPart:
    """The :class:`DayPart` of a local time of day in hours (taken modulo 24)."""
    h = float(hour) % 24.0
    for part in DAY_PARTS:
        if part.start_hour <= h < part.end_hour:
            return part
    return DAY_PARTS[-1]  # unreachable: the parts cover [0, 24)


def clock(hour: float) -> str:
    """14.5 → "14:30"."""
    minutes = int(round((float(hour) % 24.0) * 60)) % (24 * 60)
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True)
class Applied:
    """The context terms one search ranks with, after the switches."""

    weights: Weights
    target_mood: tuple[float, float] | None
    heard_composers: frozenset[str] | None  # lower-case; None = no history term
    day: DayPart | None
    time_weight: float

    def rerank_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`retrieval.rerank.score_candidates` for these terms."""
        return {
            "weights": self.weights,
            "target_mood": self.target_mood,
            "heard_composers": set(self.heard_composers) if self.heard_composers is not None else None,
            "time_target": self.day.target if self.day is not None else None,
            "time_weight": self.time_weight,
        }


def apply(request: SearchRequest, *, heard: frozenset[str] | None) -> Applied:
    """The terms ``request`` ranks with. ``heard``: the listener's played composers (lower-case), if known.

    A switch that is off drops its term entirely (no weight, no target), so that ranking is the one
    without the signal; the mood and discovery weights of the request are kept otherwise.
    """
    ctx = request.context
    weights = request.weights
    use_history = ctx.history and heard is not None and bool(heard)
    if use_history:
        weights = replace(weights, discovery=max(weights.discovery, HISTORY_WEIGHT))
    else:
        weights = replace(weights, discovery=0.0)
    target_mood = request.target_mood if ctx.mood else None
    if target_mood is None:
        weights = replace(weights, mood=0.0)
    day = day_part(request.local_hour) if ctx.time_of_day and request.local_hour is not None else None
    return Applied(
        weights=weights,
        target_mood=target_mood,
        heard_composers=heard if use_history else None,
        day=day,
        time_weight=TIME_OF_DAY_WEIGHT if day is not None else 0.0,
    )


def rank(
    candidates: list[Candidate],
    *,
    k: int,
    one_per_track: bool,
    diversity: float,
    same_passage: frozenset[int],
) -> tuple[list[Candidate], list[Candidate]]:
    """Scored candidates → (best first after NMS, the shown results after diversity)."""
    ordered = nms(candidates=sorted(candidates, key=lambda c: -c.score), one_per_track=one_per_track)
    return ordered, mmr(candidates=ordered, k=k, diversity=diversity, same_passage=same_passage)


def rank_without(
    pool: list[Candidate],
    term: str,
    *,
    k: int,
    one_per_track: bool,
    diversity: float,
    same_passage: frozenset[int],
) -> list[Candidate]:
    """The results ``pool`` (scored, in its original order) would give without the rerank ``term``."""
    rescored = [replace(c, score=combined_score(c.terms, without=(term,))) for c in pool]
    return rank(rescored, k=k, one_per_track=one_per_track, diversity=diversity, same_passage=same_passage)[1]


def changes(shown: list[Candidate], without: list[Candidate]) -> tuple[int, int]:
    """(ranks holding another moment than without the signal, results the signal brought in)."""
    n = max(len(shown), len(without))
    ids = [c.segment_id for c in shown]
    other = [c.segment_id for c in without]
    changed = sum(
        1 for i in range(n) if (ids[i] if i < len(ids) else None) != (other[i] if i < len(other) else None)
    )
    return changed, len(set(ids) - set(other))


def composers_moved_down(shown: list[Candidate], without: list[Candidate], heard: frozenset[str]) -> int:
    """Played composers ranked lower (or gone) in ``shown`` than in ``without``."""

    def best(cs: list[Candidate]) -> dict[str, int]:
        out: dict[str, int] = {}
        for i, c in enumerate(cs):
            out.setdefault(c.composer.lower(), i)
        return out

    a, b = best(shown), best(without)
    return sum(1 for name, i in b.items() if name in heard and a.get(name, len(shown) + 1) > i)


def _not_applied(signal: str, request: SearchRequest) -> str:
    name = SIGNAL_NAMES[signal]
    if not getattr(request.context, signal):
        return f"{name}: off"
    if signal == "time_of_day":
        return f"{name}: your local time was not sent"
    if signal == "history":
        # No listener (the CLI, an API client without the cookie) has played nothing either: one text,
        # so the same search reads the same from every route.
        return f"{name}: nothing played yet"
    return f"{name}: none asked for (say 'calmer' or 'same mood')"


def report(
    *,
    request: SearchRequest,
    applied: Applied,
    pool: list[Candidate],
    shown: list[Candidate],
    same_passage: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """What context did to this answer, for the JSON response and the page.

    ``pool``: the scored candidates in their original order; ``shown``: the results. Per signal:
    ``on`` (its switch), ``applied`` (it added a term), ``text`` (one line for the listener),
    ``changed_ranks`` and ``brought_in`` (against the same answer without it).
    """
    signals = []
    for signal, term in SIGNAL_TERMS.items():
        on = bool(getattr(request.context, signal))
        applied_here = {
            "time_of_day": applied.day is not None,
            "history": applied.heard_composers is not None,
            "mood": applied.target_mood is not None,
        }[signal] and bool(pool)
        row: dict[str, Any] = {"signal": signal, "on": on, "applied": applied_here}
        if not applied_here:
            row.update(text=_not_applied(signal, request), changed_ranks=0, brought_in=0)
            signals.append(row)
            continue
        without = rank_without(
            pool, term, k=request.k, one_per_track=request.one_per_track, diversity=request.diversity,
            same_passage=same_passage,
        )  # fmt: skip
        changed, brought = changes(shown, without)
        row.update(changed_ranks=changed, brought_in=brought, weight=pool[0].terms[term][0])
        if signal == "time_of_day":
            assert applied.day is not None and request.local_hour is not None
            row.update(
                text=f"{applied.day.name} ({clock(request.local_hour)}): {applied.day.favours} favoured",
                day_part=applied.day.name,
            )
        elif signal == "history":
            assert applied.heard_composers is not None
            n = composers_moved_down(shown, without, applied.heard_composers)
            row.update(
                text=(
                    f"{n} composer{'s' if n != 1 else ''} you have played moved down"
                    if n
                    else f"the {len(applied.heard_composers)} composer"
                    f"{'s' if len(applied.heard_composers) != 1 else ''} you have played rank a little lower"
                ),
                composers_moved_down=n,
            )
        else:
            assert applied.target_mood is not None
            v, a = applied.target_mood
            row.update(
                text=f"mood you asked for (valence {v:+.2f}, arousal {a:+.2f}) favoured",
                target=[round(v, 3), round(a, 3)],
            )
        signals.append(row)
    return {
        "switches": asdict(request.context),
        "local_time": clock(request.local_hour) if request.local_hour is not None else None,
        "signals": signals,
    }
