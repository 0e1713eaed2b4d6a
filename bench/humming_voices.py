"""The humming benchmark's queries: a work's top line, cut, moved in key and tempo, and sung.

A query is the top line (skyline) of a random 10-s passage of a library work, changed as a
person humming would change it — transposed, sung faster or slower, with pitch drifting up to
±30 cents over the clip and each note onset off by ~40 ms — and voiced by one of:

* ``voice``: General MIDI "voice oohs" (program 53, the soundfont in ``pretty_midi``);
* ``whistle``: a sine an octave up with 5.5-Hz vibrato and breath noise;
* ``recorder``: General MIDI recorder (program 74);
* ``espeak``: espeak-ng singing "la" — one syllable synthesized once, re-pitched to each note
  (TD-PSOLA; espeak-ng cannot sing a given pitch itself), where espeak-ng is installed.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np

from bench.library import SAMPLE_RATE, EvalWork, Renderer

#: Seconds of every query.
QUERY_S = 10.0
#: The most a hum drifts from its key over the clip (cents), and the onset jitter σ (s).
DRIFT_CENTS = 30.0
JITTER_S = 0.04


def skyline(renderer: Renderer, ew: EvalWork) -> list[tuple[float, float, int]]:
    """The work's top line as ``(start, end, midi)`` on its clean timeline (encoder.render's skyline)."""
    from encoder.render import _melody_notes

    pm = renderer.midi(ew)
    notes = [
        (n.start, n.end, n.pitch, n.velocity)
        for inst in pm.instruments
        if not inst.is_drum
        for n in inst.notes
    ]  # type: ignore[attr-defined]
    return [(float(s), float(e), int(p)) for s, e, p, _ in _melody_notes(notes)]


def passage(
    notes: list[tuple[float, float, int]], t: float, *, tempo: float, transpose: int, rng: np.random.Generator
):
    """The notes sounding in ``[t, t + QUERY_S × tempo)`` of the clean timeline, moved to the query's time,
    key and tempo, each onset jittered."""
    out = []
    span = QUERY_S * tempo
    for s, e, p in notes:
        if e <= t or s >= t + span:
            continue
        s2, e2 = (max(s, t) - t) / tempo, (min(e, t + span) - t) / tempo
        j = float(rng.normal(0.0, JITTER_S))
        s2 = max(0.0, s2 + j)
        if e2 - s2 > 0.06:
            out.append((s2, e2, p + transpose))
    return out


def drift(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pitch drifting linearly from −d to +d cents (d ≤ DRIFT_CENTS, random sign) by variable-rate resampling."""
    d = float(rng.uniform(0.5, 1.0)) * DRIFT_CENTS * float(rng.choice([-1.0, 1.0]))
    cents = np.linspace(-d, d, y.size)
    pos = np.cumsum(2.0 ** (cents / 1200.0))
    pos = pos[pos < y.size - 1]
    return np.interp(pos, np.arange(y.size), y).astype(np.float32)


def _gm(notes: list[tuple[float, float, int]], program: int) -> np.ndarray:
    import pretty_midi

    from encoder.render import render

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program)
    inst.notes = [pretty_midi.Note(velocity=90, pitch=int(p), start=s, end=e) for s, e, p in notes]
    pm.instruments.append(inst)
    return render(midi=pm, program=program)


def whistle(notes: list[tuple[float, float, int]], rng: np.random.Generator) -> np.ndarray:
    end = max(e for _, e, _ in notes) + 0.3
    y = np.zeros(int(end * SAMPLE_RATE), np.float32)
    for s, e, p in notes:
        a, b = int(s * SAMPLE_RATE), int(e * SAMPLE_RATE)
        t = np.arange(b - a) / SAMPLE_RATE
        f = 440.0 * 2.0 ** ((p + 12 - 69) / 12.0) * 2.0 ** (20.0 / 1200 * np.sin(2 * np.pi * 5.5 * t))
        env = np.minimum(1.0, np.minimum(t / 0.04, (t[-1] - t) / 0.04 + 1e-3))
        y[a:b] += 0.3 * np.sin(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) * env
    return y + (0.004 * rng.standard_normal(y.size)).astype(np.float32)


@dataclass(frozen=True)
class Syllable:
    """One sung syllable from espeak-ng, cut into pitch periods so it can be re-pitched."""

    y: np.ndarray  # [n] float32, 16 kHz
    marks: np.ndarray  # [M] sample index of each pitch period's peak
    periods: np.ndarray  # [M] that period's length (samples)


def espeak_la() -> Syllable | None:
    """One long "laa" from espeak-ng at 16 kHz, with its pitch marks; None without espeak-ng.

    espeak-ng speaks: its "laa" glides down about four semitones, and it cannot be told a pitch
    in Hz. So the syllable is re-pitched note by note with TD-PSOLA (:func:`espeak`), which
    keeps its formants (a vowel, not a chipmunk) and holds each note's pitch flat.
    """
    import io
    import subprocess

    import soundfile as sf

    from cadenza.audio import resample
    from encoder.features import HOP
    from encoder.pitch import track_pitch

    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    try:
        wav = subprocess.run(
            [exe, "--stdout", "-s", "80", "-p", "60", "laaa"], capture_output=True, timeout=30, check=True
        ).stdout
        y, sr = sf.read(io.BytesIO(wav), dtype="float32")
    except (subprocess.SubprocessError, OSError, RuntimeError):
        return None
    y = resample(y=y if y.ndim == 1 else y.mean(1), orig_sr=sr, sr=SAMPLE_RATE)
    nz = np.nonzero(np.abs(y) > 0.01 * np.abs(y).max())[0]
    y = y[nz[0] : nz[-1]] if nz.size else y
    midi = track_pitch(y=y).midi.astype(np.float64)
    ok = np.isfinite(midi)
    if ok.sum() < 3:
        return None
    # The source period at every sample (from the 10-fps track), then one mark per period on its peak.
    t_frames = np.arange(midi.size) * HOP
    period = SAMPLE_RATE / (
        440.0 * 2.0 ** ((np.interp(np.arange(y.size), t_frames[ok], midi[ok]) - 69.0) / 12.0)
    )
    marks, m = [], int(np.argmax(np.abs(y[: int(period[0])])))
    while m < y.size - 1:
        marks.append(m)
        p = int(period[m])
        lo, hi = m + int(0.8 * p), min(m + int(1.2 * p), y.size - 1)
        if lo >= hi:
            break
        m = lo + int(np.argmax(y[lo:hi]))
    mk = np.asarray(marks)
    return Syllable(y=y, marks=mk, periods=period[mk].astype(np.int64))


def espeak(notes: list[tuple[float, float, int]], la: Syllable) -> np.ndarray:
    """TD-PSOLA: for each note, two-period grains of the syllable (stretched over the note) placed one
    target period apart, so the result sings the note's pitch with the syllable's vowel."""
    end = max(e for _, e, _ in notes) + 0.3
    y = np.zeros(int(end * SAMPLE_RATE) + 4096, np.float32)
    for s, e, p in notes:
        a, n = int(s * SAMPLE_RATE), int((e - s) * SAMPLE_RATE)
        step = SAMPLE_RATE / (440.0 * 2.0 ** ((p - 69) / 12.0))  # target period (samples)
        for tau in np.arange(0.0, n, step):
            j = min(int(tau / max(n, 1) * la.marks.size), la.marks.size - 1)  # the syllable, stretched
            m, per = int(la.marks[j]), int(la.periods[j])
            lo, hi = max(m - per, 0), min(m + per, la.y.size)
            grain = la.y[lo:hi] * np.hanning(hi - lo).astype(np.float32)
            env = min(1.0, tau / 400.0, (n - tau) / 400.0 + 1e-3)
            at = a + int(tau) - (m - lo)
            if at >= 0:
                y[at : at + grain.size] += env * grain
    return y[: int(end * SAMPLE_RATE)]


def hum(
    timbre: str,
    notes: list[tuple[float, float, int]],
    rng: np.random.Generator,
    la: Syllable | None,
) -> np.ndarray:
    """The passage ``notes`` sung, played or whistled in ``timbre``, with a little pitch drift."""
    if timbre == "voice":
        y = _gm(notes, 53)
    elif timbre == "recorder":
        y = _gm(notes, 74)
    elif timbre == "whistle":
        y = whistle(notes, rng)
    else:
        assert la is not None
        y = espeak(notes, la)
    return drift(y, rng)
