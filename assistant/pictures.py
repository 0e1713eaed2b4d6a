"""Small server-rendered SVG pictures: chroma side by side, waveform thumbnails, timelines.

Pure functions from arrays to SVG text. No scripts, no style attributes (a strict CSP comes later):
colours are presentation attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

from assistant.describe import PITCH_NAMES


def _normalize(c: np.ndarray) -> np.ndarray:
    c = np.nan_to_num(c.astype(np.float32))
    peak = c.max(axis=1, keepdims=True)
    return np.where(peak > 0, c / np.maximum(peak, 1e-9), 0.0)


def _resample_frames(c: np.ndarray, n: int) -> np.ndarray:
    if c.shape[0] == n:
        return c
    idx = np.linspace(0, c.shape[0] - 1, n).round().astype(int)
    return c[idx]


def match_mask(*, query: np.ndarray, result: np.ndarray, threshold: float = 0.8) -> np.ndarray:
    """Frames where the two chroma sequences agree: ``[n, 12]`` × ``[n, 12]`` → bool ``[n]``."""
    q = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-9)
    r = result / np.maximum(np.linalg.norm(result, axis=1, keepdims=True), 1e-9)
    return (q * r).sum(axis=1) >= threshold


def chroma_pair_svg(
    *, query: np.ndarray, result: np.ndarray, key_shift: int = 0, columns: int = 50, label: str = ""
) -> str:
    """Query and result chroma side by side (result rotated by ``key_shift``), matches outlined.

    ``query``/``result``: ``[n, 12]`` (any n ≥ 1).
    """
    q = _normalize(_resample_frames(query, columns))
    r = _normalize(_resample_frames(np.roll(result, -int(key_shift), axis=1), columns))
    mask = match_mask(query=q, result=r)
    cw, ch, gap, left, top = 3, 4, 14, 18, 12
    width = left + 2 * columns * cw + gap + 2
    height = top + 12 * ch + 4
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chroma" width="100%"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label or "chroma comparison")}">',
        f'<text x="{left}" y="9" font-size="8" fill="#555">query</text>',
        f'<text x="{left + columns * cw + gap}" y="9" font-size="8" fill="#555">result'
        + (f" (shifted {key_shift:+d})" if key_shift else "")
        + "</text>",
    ]
    for p in (0, 4, 7, 11):
        y = top + (11 - p) * ch + ch - 0.5
        out.append(f'<text x="0" y="{y}" font-size="5" fill="#777">{PITCH_NAMES[p]}</text>')
    for offset, c in ((left, q), (left + columns * cw + gap, r)):
        for t in range(columns):
            if mask[t]:
                out.append(
                    f'<rect class="match" x="{offset + t * cw}" y="{top - 2}" width="{cw}" height="{12 * ch + 3}"'
                    ' fill="#ffd54f" fill-opacity="0.5"/>'
                )
            for p in range(12):
                v = float(c[t, p])
                if v < 0.05:
                    continue
                out.append(
                    f'<rect x="{offset + t * cw}" y="{top + (11 - p) * ch}" width="{cw}" height="{ch}"'
                    f' fill="#3949ab" fill-opacity="{v:.2f}"/>'
                )
    out.append("</svg>")
    return "".join(out)


def waveform_peaks(*, audio: np.ndarray, bins: int = 400) -> np.ndarray:
    """``[n_samples]`` → ``[bins]`` peak absolute amplitude per bin, scaled to [0, 1]."""
    if audio.size == 0:
        return np.zeros(bins, dtype=np.float32)
    edges = np.linspace(0, audio.size, bins + 1).astype(int)
    peaks = np.array(
        [np.abs(audio[a:b]).max() if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:], strict=True)]
    )
    top = peaks.max()
    return (peaks / top if top > 0 else peaks).astype(np.float32)


def timeline_svg(
    *,
    peaks: np.ndarray,
    duration_s: float,
    marks: Sequence[tuple[float, float]] = (),
    width: int = 800,
    height: int = 70,
) -> str:
    """A waveform thumbnail with cited moments marked as shaded ranges."""
    n = max(len(peaks), 1)
    mid = height / 2
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="100%" height="{height}"'
        f' viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" aria-label="waveform">'
    ]
    for start, end in marks:
        x0 = width * max(0.0, start) / max(duration_s, 1e-9)
        x1 = width * min(duration_s, end) / max(duration_s, 1e-9)
        out.append(
            f'<rect class="cited" x="{x0:.1f}" y="0" width="{max(x1 - x0, 1):.1f}" height="{height}"'
            ' fill="#ffd54f" fill-opacity="0.6"/>'
        )
    step = width / n
    for i, p in enumerate(peaks):
        h = max(1.0, float(p) * (height - 4))
        out.append(
            f'<rect x="{i * step:.1f}" y="{mid - h / 2:.1f}" width="{max(step - 0.3, 0.5):.1f}" height="{h:.1f}" fill="#5c6bc0"/>'
        )
    out.append("</svg>")
    return "".join(out)
