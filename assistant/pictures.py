"""Small server-rendered SVG pictures: the aligned chroma overlay, waveforms, timelines, moment maps.

Pure functions from arrays to SVG text. No scripts, no style attributes (a strict CSP comes later):
colours are presentation attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

from retrieval.descriptors import KEY_NAMES


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


#: The overlay's geometry: a pitch row is 14 px (two 7-px halves: your passage above, the match
#: below), so the names stay readable at 1x; 100 columns of 3 px hold 10 s at 10 fps.
_ROW, _COL, _COLUMNS, _LEFT, _TOP = 14, 3, 100, 30, 22
QUERY_COLOUR, MATCH_COLOUR, STRETCH_COLOUR = "#283593", "#e65100", "#fbc02d"


def chroma_overlay_svg(
    *, query: np.ndarray, match: np.ndarray, key_shift: int = 0, label: str = "", seconds: float = 10.0
) -> str:
    """Your passage and the match on ONE pitch grid, the match rotated by ``key_shift`` semitones.

    ``query``/``match``: 10-fps chroma ``[n, 12]`` (any n >= 1, resampled to the grid). Each named
    pitch row holds the query in its upper half and the match in its lower half; the stretch
    where the two agree is marked by a band above the grid and a light wash behind it.
    """
    q = _normalize(_resample_frames(query, _COLUMNS))
    m = _normalize(_resample_frames(np.roll(match, -int(key_shift), axis=1), _COLUMNS))
    agree = match_mask(query=q, result=m)
    width = _LEFT + _COLUMNS * _COL + 4
    grid_h = 12 * _ROW
    height = _TOP + grid_h + 16
    moved = f", match moved {-int(key_shift):+d} semitones" if key_shift else ""
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chroma-overlay" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label or "aligned pitch classes")}">',
        f"<title>{escape(label or 'aligned pitch classes')}{escape(moved)}</title>",
        f'<rect x="{_LEFT}" y="2" width="9" height="9" fill="{QUERY_COLOUR}"/>'
        f'<text x="{_LEFT + 12}" y="10" font-size="11" fill="#333">your passage</text>',
        f'<rect x="{_LEFT + 100}" y="2" width="9" height="9" fill="{MATCH_COLOUR}"/>'
        f'<text x="{_LEFT + 112}" y="10" font-size="11" fill="#333">match{escape(moved and " (moved)")}</text>',
        f'<rect x="{_LEFT + 215}" y="4" width="14" height="5" fill="{STRETCH_COLOUR}"/>'
        f'<text x="{_LEFT + 232}" y="10" font-size="11" fill="#333">alike</text>',
    ]
    # The matching stretch: runs of agreeing columns, drawn as one band each.
    t = 0
    while t < _COLUMNS:
        if not agree[t]:
            t += 1
            continue
        u = t
        while u < _COLUMNS and agree[u]:
            u += 1
        x, w = _LEFT + t * _COL, (u - t) * _COL
        out.append(
            f'<rect class="stretch" x="{x}" y="{_TOP - 7}" width="{w}" height="5" fill="{STRETCH_COLOUR}"/>'
            f'<rect x="{x}" y="{_TOP}" width="{w}" height="{grid_h}" fill="{STRETCH_COLOUR}" fill-opacity="0.1"/>'
        )
        t = u
    half = _ROW / 2
    for p in range(12):
        y = _TOP + (11 - p) * _ROW
        out.append(
            f'<text class="pitch" x="{_LEFT - 4}" y="{y + _ROW - 3}" font-size="11" text-anchor="end"'
            f' fill="#333">{KEY_NAMES[p]}</text>'
            f'<line x1="{_LEFT}" x2="{_LEFT + _COLUMNS * _COL}" y1="{y}" y2="{y}" stroke="#e0e0e0"/>'
        )
        for c, colour, dy in ((q, QUERY_COLOUR, 0.0), (m, MATCH_COLOUR, half)):
            for i in range(_COLUMNS):
                v = float(c[i, p])
                if v < 0.08:
                    continue
                out.append(
                    f'<rect x="{_LEFT + i * _COL}" y="{y + dy:.1f}" width="{_COL}" height="{half:.1f}"'
                    f' fill="{colour}" fill-opacity="{v:.2f}"/>'
                )
    base = _TOP + grid_h
    for frac in (0.0, 0.5, 1.0):
        tx = _LEFT + frac * _COLUMNS * _COL
        anchor = "start" if frac == 0 else "end" if frac == 1 else "middle"
        out.append(
            f'<text x="{tx:.0f}" y="{base + 13}" font-size="11" text-anchor="{anchor}" fill="#555">'
            f"{frac * seconds:.0f} s</text>"
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


def moment_strip_svg(
    *,
    starts: Sequence[float],
    likeness: Sequence[float],
    duration_s: float,
    label: str,
    scale: tuple[float, float] = (0.0, 1.0),
    width: int = 600,
    height: int = 30,
) -> str:
    """One track's moment map: a cell per stored window (from its start to the next one), darker where
    the window is more alike to the query; the best window outlined. Clicks are read by app.js.

    ``scale``: the likeness drawn palest and darkest (a map's own range, so its contrast shows)."""
    lo, hi = scale
    span = max(hi - lo, 1e-6)
    dur = max(duration_s, 1e-3)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="moment-strip" width="100%" height="{height}"'
        f' viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" aria-label="{escape(label)}"'
        f' data-duration="{dur:.2f}">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f1f1f7"/>',
    ]
    best = int(np.argmax(likeness)) if len(likeness) else -1
    for i, (s, v) in enumerate(zip(starts, likeness, strict=True)):
        nxt = starts[i + 1] if i + 1 < len(starts) else min(dur, s + 10.0)
        x0, x1 = width * s / dur, width * max(nxt, s + 0.5) / dur
        out.append(
            f'<rect x="{x0:.1f}" y="2" width="{max(x1 - x0, 1.0):.1f}" height="{height - 4}" fill="#3949ab"'
            f' fill-opacity="{0.08 + 0.92 * min(max((float(v) - lo) / span, 0.0), 1.0):.2f}"><title>{s:.0f} s: likeness {float(v) * 100:.0f}%</title></rect>'
        )
    if best >= 0:
        s = starts[best]
        x0, x1 = width * s / dur, width * min(dur, s + 10.0) / dur
        out.append(
            f'<rect class="best" x="{x0:.1f}" y="1" width="{max(x1 - x0, 1.0):.1f}" height="{height - 2}"'
            ' fill="none" stroke="#ff8f00" stroke-width="2"/>'
        )
    out.append("</svg>")
    return "".join(out)
