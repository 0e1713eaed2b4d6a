"""Measured descriptors in words: keys, tempo, loudness, brightness, density, mood.

Pure functions over the descriptor dicts that retrieval returns (``SearchResponse.query`` and
``Result.descriptors``; column names as in ``segments``: key_index, mode, tempo_bpm, loudness_db,
brightness_hz, onset_density, valence, arousal).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from retrieval.descriptors import KEY_NAMES

_ALIASES = {
    "Db": "C#", "D#": "Eb", "Gb": "F#", "G#": "Ab", "A#": "Bb", "Cb": "B", "B#": "C", "E#": "F", "Fb": "E",
}  # fmt: skip


def _num(d: Mapping[str, Any], *names: str) -> float | None:
    for n in names:
        v = d.get(n)
        if isinstance(v, int | float) and v == v:  # not NaN
            return float(v)
    return None


def pitch_index(name: str) -> int | None:
    """'F#' / 'Gb' / 'f♯' → 6; None when not a pitch name."""
    n = name.strip().replace("♯", "#").replace("♭", "b")
    if not n:
        return None
    n = n[0].upper() + n[1:].lower()
    n = _ALIASES.get(n, n)
    return KEY_NAMES.index(n) if n in KEY_NAMES else None


def key_of(d: Mapping[str, Any]) -> tuple[int, str] | None:
    """(pitch index, mode) of a descriptor dict, or None when unmeasured."""
    mode = d.get("mode")
    idx = d.get("key_index")
    if isinstance(idx, int | float) and mode in ("major", "minor"):
        return int(idx) % 12, str(mode)
    key = d.get("key")
    if isinstance(key, str) and key:
        parts = key.split()
        p = pitch_index(parts[0])
        m = parts[1].lower() if len(parts) > 1 else (mode if mode in ("major", "minor") else None)
        if p is not None and m in ("major", "minor"):
            return p, str(m)
    return None


def key_name(d: Mapping[str, Any]) -> str | None:
    k = key_of(d)
    return f"{KEY_NAMES[k[0]]} {k[1]}" if k else None


def tempo(d: Mapping[str, Any]) -> float | None:
    return _num(d, "tempo_bpm", "tempo")


def mood_words(valence: float | None, arousal: float | None) -> str | None:
    """Valence/arousal in [-1, 1] → a short emotional profile."""
    if valence is None or arousal is None:
        return None
    if arousal > 0.25:
        feel = (
            "joyful and energetic"
            if valence > 0.25
            else "tense and agitated"
            if valence < -0.25
            else "lively"
        )
    elif arousal < -0.25:
        feel = (
            "serene and content"
            if valence > 0.25
            else "melancholy and subdued"
            if valence < -0.25
            else "calm"
        )
    else:
        feel = "warm and bright" if valence > 0.25 else "dark and brooding" if valence < -0.25 else "balanced"
    return feel


def texture_words(d: Mapping[str, Any]) -> list[str]:
    words = []
    loud = _num(d, "loudness_db")
    if loud is not None:
        words.append("quiet" if loud < -30 else "loud" if loud > -14 else "moderately loud")
    bright = _num(d, "brightness_hz")
    if bright is not None:
        words.append("dark-toned" if bright < 1200 else "bright-toned" if bright > 2800 else "mellow")
    dens = _num(d, "onset_density")
    if dens is not None:
        words.append("sparse" if dens < 1.5 else "busy" if dens > 4 else "moderately active")
    return words


def analysis(query: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Labelled lines describing the query: (label, value)."""
    rows: list[tuple[str, str]] = []
    k = key_name(query)
    if k:
        conf = _num(query, "key_confidence")
        rows.append(("Key", k + (f" (confidence {conf:.2f})" if conf is not None else "")))
    t = tempo(query)
    if t:
        rows.append(("Tempo", f"about {t:.0f} BPM"))
    loud = _num(query, "loudness_db")
    if loud is not None:
        rows.append(("Loudness", f"{loud:.1f} dB"))
    bright = _num(query, "brightness_hz")
    if bright is not None:
        rows.append(("Brightness", f"{bright:.0f} Hz spectral centroid"))
    dens = _num(query, "onset_density")
    if dens is not None:
        rows.append(("Density", f"{dens:.1f} onsets/s"))
    mood = mood_words(_num(query, "valence"), _num(query, "arousal"))
    if mood:
        rows.append(("Mood", f"{mood} (valence {query['valence']:+.2f}, arousal {query['arousal']:+.2f})"))
    return rows


def style_insights(query: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> list[str]:
    """One-line observations about where the matches come from."""
    if not results:
        return []
    out = []
    eras = Counter(r.get("era") for r in results if r.get("era"))
    if eras:
        era, n = eras.most_common(1)[0]
        if n >= 2 and n > len(results) / 2:
            out.append(f"The closest moments lean {era} ({n} of {len(results)}).")
        elif len(eras) > 1:
            out.append("They come from " + ", ".join(sorted(str(e) for e in eras)) + " music.")
    composers = Counter(r.get("composer") for r in results if r.get("composer"))
    if len(composers) > 1:
        out.append(f"They span {len(composers)} composers.")
    qk = key_of(query)
    same_mode = [r for r in results if qk and (rk := key_of(r.get("descriptors", {}))) and rk[1] == qk[1]]
    if qk and results:
        out.append(f"{len(same_mode)} of {len(results)} share its {qk[1]} mode.")
    return out


def spoken_list(items: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def timestamp(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 60}:{s % 60:02d}"


def time_range(start: float, end: float) -> str:
    return f"{timestamp(start)}–{timestamp(end)}"
