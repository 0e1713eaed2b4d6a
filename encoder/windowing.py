"""How an encoder cuts audio into moments: the one home of the 10-s window, 2-s hop and 10 fps.

A :class:`Windowing` travels inside :class:`encoder.model.EncoderConfig`, so every checkpoint's
``config.json`` records the windowing its weights were trained and indexed with, and
``Embedder.windowing`` hands it to ingest, search, evaluation and the benchmarks. Clip limits for
uploads (3 s to 10 min) are a product rule and live in ``cadenza.settings.LimitSettings``; this
record only says what the encoder itself embeds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from encoder.features import FPS, ParameterError

#: Where a track's windows start and how long each is, both ``[N]`` int64 frames
#: (:meth:`Windowing.track_starts`; what ``embed_track`` slides over a track).
Cuts = tuple[np.ndarray, np.ndarray]


class _Seconds:
    """A read-only attribute of :class:`Windowing`: one of its frame counts in seconds."""

    def __init__(self, frames_field: str) -> None:
        self.frames_field = frames_field

    def __get__(self, obj: Windowing, owner: type | None = None) -> float:
        return float(getattr(obj, self.frames_field)) / obj.fps


@dataclass(frozen=True)
class Windowing:
    fps: int = FPS  # frames per second of the acoustic features
    window_frames: int = 100  # one moment: a stored segment and the default query window (10 s)
    hop_frames: int = 20  # a library track gets a window every 2 s
    tail_frames: int = 50  # a track's last, shortened window is kept if at least 5 s remain
    min_frames: int = 30  # the shortest moment the encoder was trained on (3 s crops)
    max_frames: int = 300  # the longest window the encoder embeds (30 s)

    def __post_init__(self) -> None:
        if not 0 < self.min_frames <= self.window_frames <= self.max_frames:
            raise ValueError(f"windowing needs 0 < min_frames <= window_frames <= max_frames, got {self}")
        if self.fps < 1 or self.hop_frames < 1 or not 0 < self.tail_frames <= self.window_frames:
            raise ValueError(
                f"windowing needs positive fps/hop and 0 < tail_frames <= window_frames, got {self}"
            )

    # The same lengths in seconds (frames / fps): window_s, hop_s, min_s, max_s.
    window_s = _Seconds("window_frames")
    hop_s = _Seconds("hop_frames")
    min_s = _Seconds("min_frames")
    max_s = _Seconds("max_frames")

    def frames(self, seconds: float) -> int:
        """Whole frames in ``seconds`` (rounded)."""
        return int(round(seconds * self.fps))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Windowing:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def derive(cls, *, model: dict[str, Any], training: dict[str, Any] | None = None) -> Windowing:
        """The windowing of a checkpoint written before it was recorded (the shipped cadenza-v1).

        Such a config holds the pieces elsewhere: ``model.max_frames``, and in its training
        record ``batch.win_frames``, ``batch.min_crop_frames`` and ``corpus.fps``. The hop and
        the tail were never recorded; ingest has always used 2 s and 5 s, which are the defaults.
        """
        training = training or {}
        batch = training.get("batch") or {}
        corpus = training.get("corpus") or {}
        base = cls()
        return cls(
            fps=int(corpus.get("fps", base.fps)),
            window_frames=int(batch.get("win_frames", base.window_frames)),
            min_frames=int(batch.get("min_crop_frames", base.min_frames)),
            max_frames=int(model.get("max_frames", base.max_frames)),
        )

    def track_starts(
        self, n_frames: int, *, window: int | None = None, hop: int | None = None, tail: int | None = None
    ) -> Cuts:
        """Where windows start on a track of ``n_frames`` and how long each is, both ``[N]`` int64.

        Windows of ``window`` frames every ``hop``; the first window that would run past the end
        is kept, shortened, if at least ``tail`` frames remain (so a 7-s track gives one 7-s window
        and a track shorter than ``tail`` gives none). None = this record's own values.
        """
        win = self.window_frames if window is None else window
        step = self.hop_frames if hop is None else hop
        keep = self.tail_frames if tail is None else tail
        if win < 1 or step < 1 or keep < 1:
            raise ParameterError("window, hop and tail frames must be positive")
        starts = list(range(0, n_frames - win + 1, step)) if n_frames >= win else []
        nxt = starts[-1] + step if starts else 0
        if nxt + win > n_frames and n_frames - nxt >= keep:
            starts.append(nxt)
        s = np.asarray(starts, dtype=np.int64)
        return s, np.minimum(n_frames - s, win)


#: The windowing every checkpoint so far was trained and indexed with: for code with no encoder at
#: hand (a stored segment's length, defaults of pure functions). With an embedder, use its own.
DEFAULT_WINDOWING = Windowing()
