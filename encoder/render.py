"""MIDI → mono 16 kHz audio with tinysoundfont (the scores come from :mod:`encoder.scores`).

* :func:`render` plays a MIDI with one General MIDI program on every (non-drum) part, with
  optional transposition, tempo change and "melody only" (top voice on a voice-like patch),
  using the GM soundfont that ships inside ``pretty_midi`` (``TimGM6mb.sf2``) or, for some
  corpus views, Debian's ``fluid-soundfont-gm`` (``FluidR3_GM.sf2``) when it is installed, so the
  training timbres are not one synthesizer's.
"""

from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path

import numpy as np

from cadenza.errors import InputError

SAMPLE_RATE = 16_000

#: General MIDI programs used for "several instruments" (0-based program numbers).
GM_PROGRAMS: dict[int, str] = {
    0: "piano",
    6: "harpsichord",
    19: "organ",
    24: "guitar",
    40: "violin",
    42: "cello",
    48: "strings",
    52: "choir",
    53: "voice",
    56: "trumpet",
    61: "brass",
    68: "oboe",
    71: "clarinet",
    73: "flute",
    74: "recorder",
}
#: The timbre of "melody only" renders: a hummed / sung line.
MELODY_PROGRAM = 53

#: Seconds of release after the last note-off.
TAIL_SECONDS = 1.0
#: The soundfont inside the ``pretty_midi`` wheel: always there.
DEFAULT_SOUNDFONT = "timgm6mb"
#: A second General MIDI soundfont (141 MB; ``apt-get install fluid-soundfont-gm``); optional.
FLUID_SOUNDFONT = "fluidr3"
FLUID_SF2 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")


class RenderError(InputError):
    """A score could not be parsed, converted to MIDI or rendered."""


def program_name(program: int) -> str:
    return GM_PROGRAMS.get(program, f"gm{program}")


def safe_name(text: str) -> str:
    """``text`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def soundfont_path(name: str) -> Path | None:
    """The file of soundfont ``name`` (:data:`DEFAULT_SOUNDFONT` or :data:`FLUID_SOUNDFONT`); None when
    it is not installed."""
    if name == DEFAULT_SOUNDFONT:
        import pretty_midi

        return Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if name == FLUID_SOUNDFONT:
        return FLUID_SF2 if FLUID_SF2.is_file() else None
    raise RenderError(f"unknown soundfont {name!r}; expected {DEFAULT_SOUNDFONT} or {FLUID_SOUNDFONT}")


@functools.cache
def _soundfont_bytes(name: str) -> bytes:
    path = soundfont_path(name)
    if path is None:
        raise RenderError(f"soundfont {name} is not installed (apt-get install fluid-soundfont-gm)")
    return path.read_bytes()


def _melody_notes(notes: list[tuple[float, float, int, int]]) -> list[tuple[float, float, int, int]]:
    """Skyline: keep a note when it is the highest sounding at its onset; cut it at the next kept onset."""
    notes = sorted(notes, key=lambda n: (n[0], -n[2]))
    kept: list[tuple[float, float, int, int]] = []
    active: list[tuple[float, float, int, int]] = []
    for note in notes:
        start = note[0]
        active = [a for a in active if a[1] > start + 1e-6]
        if kept and abs(kept[-1][0] - start) < 1e-6:
            continue  # a lower note of the same chord
        if any(a[2] > note[2] for a in active):
            active.append(note)
            continue  # an inner voice starting under a held top note
        if kept and kept[-1][1] > start:
            s, _, p, v = kept[-1]
            kept[-1] = (s, start, p, v)
        kept.append(note)
        active.append(note)
    return kept


def render(
    *,
    midi,
    program: int,
    sr: int = SAMPLE_RATE,
    transpose: int = 0,
    tempo_scale: float = 1.0,
    melody_only: bool = False,
    max_seconds: float | None = None,
    soundfont: str = DEFAULT_SOUNDFONT,
) -> np.ndarray:
    """Play ``midi`` (a ``pretty_midi.PrettyMIDI``) with GM ``program`` on every non-drum part.

    ``transpose`` semitones; ``tempo_scale`` 1.05 plays 5 % faster (all times divided by it);
    ``melody_only`` plays only the top voice on :data:`MELODY_PROGRAM`-like timbre ``program``;
    ``max_seconds`` cuts the output; ``soundfont`` names the GM soundfont (:func:`soundfont_path`). Returns mono float32 ``[n]``, DC-free, peak 0.9.
    """
    import scipy.signal
    import tinysoundfont

    if tempo_scale <= 0:
        raise RenderError(f"tempo_scale must be > 0, got {tempo_scale}")
    parts = [inst for inst in midi.instruments if not inst.is_drum]
    notes_by_part: list[list[tuple[float, float, int, int]]] = [
        [(n.start / tempo_scale, n.end / tempo_scale, n.pitch + transpose, n.velocity) for n in inst.notes]
        for inst in parts
    ]
    if melody_only:
        notes_by_part = [_melody_notes([n for part in notes_by_part for n in part])]
    notes_by_part = [[n for n in part if 0 <= n[2] <= 127 and n[1] > n[0]] for part in notes_by_part]
    all_notes = [n for part in notes_by_part for n in part]
    if not all_notes:
        raise RenderError("nothing to render: the MIDI has no playable notes")
    end = max(n[1] for n in all_notes) + TAIL_SECONDS
    if max_seconds is not None:
        end = min(end, max_seconds)
    total = int(round(end * sr))

    synth = tinysoundfont.Synth(samplerate=sr, gain=-6.0)
    sfid = synth.sfload(_soundfont_bytes(soundfont))
    channels = [c for c in range(16) if c != 9]
    events: list[tuple[int, int, int, int, int]] = []  # (sample, order, chan, key, vel): offs first
    for i, part in enumerate(notes_by_part):
        chan = channels[i % len(channels)]
        for start, stop, key, vel in part:
            events.append((int(round(start * sr)), 1, chan, key, max(1, min(127, vel))))
            events.append((int(round(stop * sr)), 0, chan, key, 0))
    for i in range(min(len(notes_by_part), len(channels))):
        synth.program_select(channels[i], sfid, 0, program)
    events.sort()
    out = np.zeros(total * 2, dtype=np.float32)
    pos = 0
    for sample, is_on, chan, key, vel in events:
        if sample >= total:
            break
        if sample > pos:
            buf = memoryview(out[pos * 2 : sample * 2]).cast("B")  # type: ignore[arg-type]
            synth.generate_simple(sample - pos, buffer=buf)
            pos = sample
        if is_on:
            synth.noteon(chan, key, vel)
        else:
            synth.noteoff(chan, key)
    if total > pos:
        synth.generate_simple(total - pos, buffer=memoryview(out[pos * 2 : total * 2]).cast("B"))  # type: ignore[arg-type]
    mono = out.reshape(-1, 2).mean(axis=1)
    # Some string patches carry a DC offset; a gentle 20 Hz high-pass removes it.
    sos = scipy.signal.butter(2, 20.0, btype="highpass", fs=sr, output="sos")
    mono = scipy.signal.sosfilt(sos, mono).astype(np.float32)
    peak = float(np.max(np.abs(mono))) if mono.size else 0.0
    if peak > 1e-6:
        mono *= 0.9 / peak
    return mono


def stable_hash(text: str) -> int:
    """A process-independent integer hash (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")
