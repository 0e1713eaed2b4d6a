"""How well the library's stored melodic line follows the scores' top line (the humming benchmark's
library), for the line ingest stores now and the previous settings, and what it costs."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.library import SAMPLE_RATE, EvalWork


def _truth_frames(notes: list[tuple[float, float, int]], n: int) -> np.ndarray:
    """The score's top line at the contour frames (10 fps, frame t at t / 10 s), NaN in rests."""
    from retrieval.melody import MELODY_FPS

    t = np.arange(n) / MELODY_FPS
    out = np.full(n, np.nan)
    for s, e, p in notes:
        out[(t >= s) & (t < e)] = p
    return out


#: The library line's settings before this benchmark's tuning (compression, harmonic decay).
PREVIOUS_LINE = (1.0 / 3.0, 0.8)


def line_accuracy(
    works: list[EvalWork], clean: dict[str, np.ndarray], lines: dict[str, list[tuple[float, float, int]]]
) -> dict[str, Any]:
    """Share of the score's top-line frames where the library's melodic line has its pitch class (±½
    semitone, any octave), for the line ingest stores now and the previous one; CPU ms per audio minute."""
    from retrieval.analysis import prepare
    from retrieval.melody import melody_contour, melody_voices

    hits = {"now": 0.0, "previous": 0.0}
    cpu = {"now": 0.0, "previous": 0.0}
    by_composer: dict[str, list[float]] = {}
    total, seconds = 0, 0.0
    warm = np.zeros(SAMPLE_RATE, np.float32)  # build both salience matrices before timing
    melody_contour(y=warm)
    melody_voices(y=warm, voices=1, compression=PREVIOUS_LINE[0], decay=PREVIOUS_LINE[1])
    for ew in works:
        y = prepare(y=clean[ew.work_id])
        seconds += y.size / SAMPLE_RATE
        t0 = time.process_time()
        now = melody_contour(y=y)
        t1 = time.process_time()
        prev = melody_voices(y=y, voices=1, compression=PREVIOUS_LINE[0], decay=PREVIOUS_LINE[1])[0]
        t2 = time.process_time()
        cpu["now"] += t1 - t0
        cpu["previous"] += t2 - t1
        truth = _truth_frames(lines[ew.work_id], now.size)
        ok = np.isfinite(truth)
        total += int(ok.sum())
        for name, c in (("now", now), ("previous", prev)):
            good = np.abs((c[ok] - truth[ok] + 6.0) % 12.0 - 6.0) <= 0.5  # NaN compares False
            hits[name] += float(good.sum())
            by_composer.setdefault(f"{ew.composer} {name}", []).append(
                float(good.mean()) if ok.any() else 0.0
            )
    return {
        "frames": total,
        "now": round(hits["now"] / max(total, 1), 3),
        "previous": round(hits["previous"] / max(total, 1), 3),
        "cpu_ms_per_audio_minute": {k: round(1000 * v / max(seconds / 60, 1e-9), 1) for k, v in cpu.items()},
        "by_composer": {k: round(float(np.mean(v)), 2) for k, v in sorted(by_composer.items())},
    }
