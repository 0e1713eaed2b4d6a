"""Synthetic audio with known content, for tests and benchmarks: tones, chords in a known key, click
tracks, noise, sung tunes, files.

Everything is generated with numpy where it is used (no audio is committed). The tests and the
benchmarks (bench/load.py) both use it, so it lives below both.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SR = 16_000

#: Pitch classes of the diatonic triads (I, ii, iii, IV, V, vi) of C major, as semitones above C.
_MAJOR_TRIADS = {1: (0, 4, 7), 2: (2, 5, 9), 3: (4, 7, 11), 4: (5, 9, 0), 5: (7, 11, 2), 6: (9, 0, 4)}


def midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12.0)


def tone(*, hz: float, seconds: float, sr: int = SR, amp: float = 0.2, harmonics: int = 4) -> np.ndarray:
    """A harmonic tone with a gentle attack/decay envelope, [n] float32."""
    t = np.arange(int(round(seconds * sr))) / sr
    y = np.zeros_like(t)
    for h in range(1, harmonics + 1):
        if hz * h < sr / 2:
            y += np.sin(2 * np.pi * hz * h * t) / h
    env = np.minimum(1.0, t / 0.02) * np.exp(-1.5 * t / max(seconds, 1e-3))
    return (amp * y * env / harmonics**0.5).astype(np.float32)


def chord(*, pitch_classes: Sequence[int], seconds: float, root_octave: int = 4, sr: int = SR) -> np.ndarray:
    """A chord of the given pitch classes (0 = C) with a bass note, [n] float32."""
    y = np.zeros(int(round(seconds * sr)), np.float32)
    base = 12 * (root_octave + 1)
    for pc in pitch_classes:
        y += tone(hz=midi_hz(base + pc), seconds=seconds, sr=sr)
    y += tone(hz=midi_hz(base - 12 + pitch_classes[0]), seconds=seconds, sr=sr, amp=0.25)
    return y


def progression(
    *, degrees: Sequence[int], key: int = 0, chord_s: float = 1.0, sr: int = SR, repeats: int = 1
) -> np.ndarray:
    """Diatonic major triads on ``degrees`` (1..6) in the major key ``key`` (0 = C), [n] float32."""
    parts = []
    for _ in range(repeats):
        for d in degrees:
            pcs = [(p + key) % 12 for p in _MAJOR_TRIADS[d]]
            parts.append(chord(pitch_classes=pcs, seconds=chord_s, sr=sr))
    return np.concatenate(parts)


def random_chord_track(*, seconds: float, seed: int, key: int = 0, sr: int = SR) -> np.ndarray:
    """A track of random diatonic chords of random lengths (0.5–1.5 s): unique moments everywhere."""
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    n = 0
    while n < seconds * sr:
        d = int(rng.integers(1, 7))
        pcs = [(p + key) % 12 for p in _MAJOR_TRIADS[d]]
        part = chord(
            pitch_classes=pcs, seconds=float(rng.uniform(0.5, 1.5)), root_octave=int(rng.integers(3, 5))
        )
        parts.append(part)
        n += part.size
    return np.concatenate(parts)[: int(seconds * sr)].astype(np.float32)


def clicks(*, bpm: float, seconds: float, sr: int = SR, pitch_hz: float = 1000.0) -> np.ndarray:
    """A click track at ``bpm``: short decaying tone bursts, [n] float32."""
    y = np.zeros(int(round(seconds * sr)), np.float32)
    burst = tone(hz=pitch_hz, seconds=0.06, sr=sr, amp=0.6, harmonics=2)
    period = 60.0 / bpm
    t = 0.0
    while t < seconds:
        i = int(round(t * sr))
        seg = burst[: max(0, y.size - i)]
        y[i : i + seg.size] += seg
        t += period
    return y


def noise(*, seconds: float, sr: int = SR, seed: int = 0, amp: float = 0.2) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


def write_audio(path: Path, y: np.ndarray, *, sr: int = SR, chunk_s: float = 5.0) -> Path:
    """Write ``y`` to ``path`` by extension: wav/flac/ogg/mp3 via soundfile in chunks, m4a via ffmpeg."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    if ext in (".m4a", ".aac", ".opus"):
        import imageio_ffmpeg

        cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y"]
        cmd += ["-f", "f32le", "-ar", str(sr), "-ac", "1", "-i", "-"]
        cmd += ["-c:a", "aac" if ext != ".opus" else "libopus", "-b:a", "96k", str(path)]
        subprocess.run(cmd, input=np.asarray(y, "<f4").tobytes(), check=True, timeout=60)
        return path
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}[ext]
    subtype = {"OGG": "VORBIS", "MP3": "MPEG_LAYER_III", "FLAC": "PCM_16", "WAV": "PCM_16"}[fmt]
    step = int(chunk_s * sr)
    # One long sf.write of OGG/Vorbis segfaults in libsndfile 1.2.2: write in chunks.
    with sf.SoundFile(str(path), "w", samplerate=sr, channels=1, format=fmt, subtype=subtype) as f:
        for i in range(0, len(y), step):
            f.write(np.clip(y[i : i + step], -1, 1).astype(np.float32))
    return path


#: A major scale (semitones above the tonic) for random tunes.
_SCALE = (0, 2, 4, 5, 7, 9, 11, 12, 14)


def random_tune(*, seconds: float, seed: int, tonic: int = 67) -> list[tuple[float, float, int]]:
    """A random stepwise tune as ``(start_s, end_s, midi)`` notes of 0.25–0.75 s filling ``seconds``."""
    rng = np.random.default_rng(seed)
    notes, t, deg = [], 0.0, 4
    while t < seconds:
        d = float(rng.choice([0.25, 0.5, 0.5, 0.75]))
        deg = int(np.clip(deg + rng.choice([-2, -1, 1, 2, 3, -3]), 0, len(_SCALE) - 1))
        notes.append((t, min(t + d, seconds), tonic + _SCALE[deg]))
        t += d
    return notes


def sing(
    *,
    notes: Sequence[tuple[float, float, int]],
    transpose: float = 0.0,
    tempo: float = 1.0,
    sr: int = SR,
    harmonics: int = 6,
    vibrato_cents: float = 25.0,
) -> np.ndarray:
    """A voice-like line (harmonics falling off, 5.5-Hz vibrato, soft note edges) of ``notes``.

    ``tempo`` 1.1 sings 10 % faster; ``transpose`` in semitones (fractions = out of tune).
    """
    end = max(n[1] for n in notes) / tempo
    y = np.zeros(int(round((end + 0.2) * sr)), np.float32)
    for start, stop, pitch in notes:
        a, b = int(round(start / tempo * sr)), int(round(stop / tempo * sr))
        t = np.arange(b - a) / sr
        f = midi_hz(pitch + transpose) * 2.0 ** (vibrato_cents / 1200.0 * np.sin(2 * np.pi * 5.5 * t))
        phase = 2 * np.pi * np.cumsum(f) / sr
        note = sum(np.sin(h * phase) * 0.7 ** (h - 1) for h in range(1, harmonics + 1))
        env = np.minimum(1.0, np.minimum(t / 0.03, (t[-1] - t) / 0.03 + 1e-3)) if t.size else t
        y[a:b] += (0.2 * note * env).astype(np.float32)
    return y


def accompanied_tune(*, notes: Sequence[tuple[float, float, int]], seed: int, sr: int = SR) -> np.ndarray:
    """``notes`` played as the top voice (a bright harmonic tone) over random diatonic chords below it."""
    end = max(n[1] for n in notes)
    y = np.zeros(int(round((end + 0.2) * sr)), np.float32)
    for start, stop, pitch in notes:
        a = int(round(start * sr))
        note = tone(hz=midi_hz(pitch), seconds=stop - start, sr=sr, amp=0.3, harmonics=6)
        y[a : a + note.size] += note
    acc = random_chord_track(seconds=end, seed=seed, key=7, sr=sr) * 0.6
    # The chords sit an octave below the tune (chord() builds them from octave 4).
    n = min(acc.size, y.size)
    y[:n] += acc[:n]
    return y


def write_chord_tracks(folder: Path, n: int, *, seconds: float, seed: int) -> list[Path]:
    """``n`` FLAC chord tracks ``t0.flac`` … in ``folder``, each in another key."""
    return [
        write_audio(folder / f"t{i}.flac", random_chord_track(seconds=seconds, seed=seed + i, key=i % 12))
        for i in range(n)
    ]
