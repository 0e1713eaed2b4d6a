"""The search contract shared by the CLI, the JSON API and the chat.

Plain dataclasses: a :class:`SearchRequest` goes in, a :class:`SearchResponse` comes out;
``SearchResponse.to_json()`` is exactly what ``cadenza search --json`` prints and
``POST /api/search`` returns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cadenza.errors import InputError
from encoder.windowing import DEFAULT_WINDOWING


@dataclass(frozen=True)
class MomentRef:
    """A moment of a library track: the 10 s starting at ``start_s``."""

    track_id: int
    start_s: float


@dataclass(frozen=True)
class Filters:
    composers: tuple[str, ...] = ()  # include only these (case-insensitive)
    exclude_composers: tuple[str, ...] = ()
    works: tuple[str, ...] = ()
    exclude_works: tuple[str, ...] = ()
    eras: tuple[str, ...] = ()
    exclude_eras: tuple[str, ...] = ()
    tracks: tuple[int, ...] = ()
    exclude_tracks: tuple[int, ...] = ()
    key: str | None = None  # e.g. "C", "F#"; with mode
    mode: str | None = None  # "major" | "minor"
    min_bpm: float | None = None
    max_bpm: float | None = None

    @property
    def active(self) -> bool:
        return any(v not in ((), None) for v in asdict(self).values())


@dataclass(frozen=True)
class Weights:
    """Relative weight of each reranking component ("more harmony, less timbre")."""

    embedding: float = 1.0
    harmony: float = 0.35
    progression: float = 0.15
    mood: float = 0.0  # > 0 when the listener asked for a mood
    discovery: float = 0.0  # > 0 favours composers the listener has not heard


#: Default diversity of the top k (0 = plain ranking, 1 = a composer already shown must beat
#: a new one by the whole spread of the top k's scores; see retrieval.diversity.mmr). Chosen on
#: the TRAINING sources through the product (encoder/MODEL_CARD.md, "Choosing the defaults"): the
#: largest of 0, 0.05, 0.1, 0.15, 0.2, 0.3 whose same-source P@10 stayed at or above the MFCC+chroma
#: baseline's (0.353; at 0: 0.385, 0.15: 0.360, 0.2: 0.351, 0.3: 0.335). Most of what a step
#: costs is same-source tracks sharing a composer tag pushed out, not new sources brought in.
DEFAULT_DIVERSITY = 0.15


@dataclass(frozen=True)
class Aspects:
    """How much each aspect of likeness counts, each ≥ 0 (1 = as usual, 0 = ignore it).

    "Same sound, any harmony" is ``Aspects(harmony=0)``; "only the rhythm" is
    ``Aspects(sound=0, harmony=0, melody=0)``. They scale the rerank's terms (see
    :func:`retrieval.rerank.score_candidates`): sound = the learned embedding and the timbre
    descriptors, harmony = key-invariant chroma and chord motion, rhythm = tempo and onset
    density, melody = the contour of the strongest pitch class.
    """

    sound: float = 1.0
    harmony: float = 1.0
    rhythm: float = 1.0
    melody: float = 1.0

    def validated(self) -> Aspects:
        """Self, or InputError naming the aspect that is not a finite number in [0, 10]."""
        for name, v in asdict(self).items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= float(v) <= 10.0:
                raise InputError(f"aspect weight {name!r} must be a number between 0 and 10, got {v!r}")
        if not any(float(v) > 0 for v in asdict(self).values()):
            raise InputError("at least one aspect weight (sound, harmony, rhythm, melody) must be above 0")
        return self


def check_diversity(value: object) -> float:
    """``value`` as a diversity in [0, 1], or InputError saying what to send."""
    try:
        d = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"diversity must be a number between 0 and 1, got {value!r}") from None
    if isinstance(value, bool) or not 0.0 <= d <= 1.0:  # NaN fails this too
        raise InputError(f"diversity must be a number between 0 and 1, got {value!r}")
    return d


@dataclass(frozen=True)
class Context:
    """Which listening-context signals may move the ranking. Each is a small rerank term, never a
    filter; switching one off gives exactly the ranking without it (see :mod:`retrieval.context`)."""

    time_of_day: bool = True  # the listener's local hour → a calmer/brighter target
    history: bool = True  # composers this listener has played move down a little
    mood: bool = True  # the mood a follow-up asked for ("calmer", "same mood")


#: Results a search returns unless asked otherwise, and the most it returns: the one home for the
#: API, the chat, the page's selector and the CLI. 50 cards is already more than a page shows well.
DEFAULT_K = 10
MAX_K = 50


@dataclass(frozen=True)
class SearchRequest:
    """One search. Exactly one query source: ``audio`` or ``moments`` (or both to blend)."""

    audio: np.ndarray | None = None  # mono float32 at 16 kHz
    start_s: float | None = None  # which part of the audio; None = most representative
    duration_s: float = DEFAULT_WINDOWING.window_s  # from start_s; clamped to the encoder's longest window
    moments: tuple[MomentRef, ...] = ()  # reference moments to move towards
    minus: tuple[MomentRef, ...] = ()  # moments to move away from ("not #3")
    k: int = DEFAULT_K
    filters: Filters = field(default_factory=Filters)
    weights: Weights = field(default_factory=Weights)
    one_per_track: bool = True
    # 0 = the plain ranking; higher spreads composers/eras across the top k (retrieval.diversity.mmr).
    diversity: float = DEFAULT_DIVERSITY
    aspects: Aspects = field(default_factory=Aspects)
    listener_id: str | None = None
    target_mood: tuple[float, float] | None = None  # (valence, arousal) in [-1, 1]
    tempo_factor: float | None = None  # "slower" = 0.8: prefer tempo near query * factor
    # An audio query is also searched moved by these semitones (a hummed tune or another
    # recording is rarely in the library's key); () = the query's own key only.
    transpose_probes: tuple[int, ...] = (-1, 1)
    # How an audio query is searched (retrieval/melody_search.py): "auto" searches a single voice
    # (hum, whistle, sung line, one instrument) by its melody in any key and everything else
    # by its sound; "melody" and "audio" force one route.
    route: str = "auto"
    context: Context = field(default_factory=Context)
    local_hour: float | None = None  # the listener's local time of day in hours [0, 24); None = unknown


@dataclass
class Result:
    rank: int
    segment_id: int
    track_id: int
    title: str
    composer: str
    work: str
    era: str
    path: str
    start: float  # localized start, seconds
    end: float
    score: float  # final reranked score
    # Calibrated probability that this is the same passage as the query, [0, 1].
    match: float
    # How alike, 0–100, against the library's own distribution (retrieval.likeness): a strong
    # "different piece, same feel" reads high although its ``match`` is low.
    likeness: float
    components: dict[str, float] = field(default_factory=dict)  # why it ranked
    # The four aspects of likeness (sound, harmony, rhythm, melody), each in [0, 1].
    aspects: dict[str, float] = field(default_factory=dict)
    descriptors: dict[str, Any] = field(default_factory=dict)
    key_shift: int = 0  # semitones the chroma was rotated to match
    reason: str = ""
    # Places the diversity step moved this result from its score's place (+ = up), and why.
    moved: int = 0
    moved_reason: str = ""
    # Other starts (seconds) where this result's passage plays again in its track, note for note
    # (retrieval.repeats); only for a result that is the query's own passage.
    also_at: list[float] = field(default_factory=list)


@dataclass
class SearchResponse:
    query: dict[str, Any]  # measured descriptors of the query + its start/end
    results: list[Result]
    nothing_similar: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "nothing_similar": self.nothing_similar,
            "results": [asdict(r) for r in self.results],
            "timings_ms": self.timings_ms,
        }
