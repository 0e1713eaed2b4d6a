"""Query clips for the quality benchmark: augmented passages at random (non-grid) offsets.

A :class:`Query` knows which library work and which second of its clean timeline it shows,
so a result can be scored as a re-find (right work, ``|Δt| ≤ 2.5 s``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.library import SAMPLE_RATE, EvalWork, Renderer
from encoder import augment
from encoder.corpus_real import AUDIO_VIEWS, degrade

#: name → how the clip is made. 'render' variants re-render the score (exact pitch / tempo).
AUGMENTATIONS: tuple[str, ...] = (
    "clean",
    "noise",
    "eq",
    "mp3",
    "reverb",
    "pitch+1",
    "pitch-1",
    "tempo+5",
    "tempo-5",
)
AUGMENTATION_HELP = {
    "clean": "the library render itself (upper bound)",
    "noise": "white or pink noise at SNR 5–30 dB (encoder.augment.add_noise)",
    "eq": "random low-pass 2–6 kHz / high-pass 100–500 Hz / ±4–9 dB bell (augment.random_eq)",
    "mp3": "MP3 round trip at 32–64 kbit/s (augment.mp3_roundtrip)",
    "reverb": "synthetic room, RT60 0.3–2 s, 20–60 % wet (augment.reverb)",
    "phone": "a phone line: band-pass 300–3400 Hz, through 8 kHz sampling, soft clipping (phone_band)",
    "pitch+1": "score re-rendered 1 semitone up",
    "pitch-1": "score re-rendered 1 semitone down",
    "tempo+5": "score re-rendered 5 % faster",
    "tempo-5": "score re-rendered 5 % slower",
}


@dataclass
class Query:
    work_index: int  # index into the library's works
    start_s: float  # canonical (clean timeline) start
    length_s: float
    kind: str
    audio: np.ndarray


def _variant(kind: str) -> dict:
    if kind.startswith("pitch"):
        return {"transpose": int(kind[5:])}
    if kind.startswith("tempo"):
        return {"tempo_scale": 1.0 + int(kind[5:]) / 100.0}
    return {}


def make_queries(
    *,
    works: list[EvalWork],
    renderer: Renderer,
    clean: dict[str, np.ndarray],
    kind: str,
    length_s: float,
    n: int,
    rng: np.random.Generator,
    program: str = "primary",
) -> list[Query]:
    """``n`` clips of ``length_s`` seconds, each from a random work at a random offset.

    ``program``: 'primary' (the library's instrument), 'other' (cross-instrument) or
    'melody' (top voice only, on a voice patch).
    """
    out: list[Query] = []
    for _ in range(n):
        wi = int(rng.integers(len(works)))
        ew = works[wi]
        dur = clean[ew.work_id].size / SAMPLE_RATE
        var = _variant(kind)
        scale = var.get("tempo_scale", 1.0)
        hi = dur - length_s * scale - 0.5
        if hi <= 0.1:
            continue
        t = float(np.round(rng.uniform(0.1, hi), 2))  # canonical seconds, not on any grid
        if program == "primary" and not var:
            y = clean[ew.work_id]
        else:
            prog = {"primary": None, "other": ew.other, "melody": 53}[program]
            y = renderer.audio(ew, program=prog, melody_only=(program == "melody"), **var)
        i0 = int(round(t / scale * SAMPLE_RATE))
        clip = y[i0 : i0 + int(round(length_s * SAMPLE_RATE))].astype(np.float32)
        if clip.size < int(length_s * SAMPLE_RATE * 0.9):
            continue
        clip = augment_clip(clip=clip, kind=kind, rng=rng)
        out.append(Query(work_index=wi, start_s=t, length_s=length_s, kind=kind, audio=clip))
    return out


#: The augmentations done on the query clip itself (the others change how it is made): the
#: real-recording corpus's degraded views, so training and benchmark hear the same distortions.
AUDIO_AUGMENTATIONS: tuple[str, ...] = AUDIO_VIEWS


def phone_band(*, clip: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``clip [n]`` through a phone line (:func:`encoder.augment.phone_band`, also a training view)."""
    return augment.phone_band(y=clip, sr=sr)


def augment_clip(*, clip: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """``clip [n]`` 16 kHz → the same clip degraded by ``kind`` (:data:`AUDIO_AUGMENTATIONS`, with
    :func:`encoder.corpus_real.degrade`); any other kind returns it unchanged."""
    if kind in AUDIO_AUGMENTATIONS:
        return degrade(y=clip, view=kind, rng=rng)
    return clip


def out_of_library_clips(*, seconds: float, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """White noise, pink noise, silence and (when espeak-ng is installed) synthesized speech."""
    n = int(seconds * SAMPLE_RATE)
    white = [(0.1 * rng.standard_normal(n)).astype(np.float32) for _ in range(3)]
    pink = []
    for _ in range(3):
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.arange(spec.size)
        spec[1:] /= np.sqrt(f[1:])
        spec[0] = 0
        y = np.fft.irfft(spec, n)
        pink.append((0.1 * y / np.abs(y).max()).astype(np.float32))
    clips = {"white noise": white, "pink noise": pink, "silence": [np.zeros(n, np.float32)]}
    speech = speech_clips(seconds=seconds)
    if speech:
        clips["speech (espeak-ng)"] = speech
    return clips


SENTENCES = (
    "The quick brown fox jumps over the lazy dog while the orchestra tunes in the next room.",
    "Please remember to bring the quarterly report to the meeting on Thursday afternoon.",
    "Weather forecast for tomorrow: light rain in the morning, clearing by the evening.",
)


def speech_clips(*, seconds: float) -> list[np.ndarray]:
    """Sentences spoken by espeak-ng, resampled to 16 kHz and padded/cut to ``seconds``; [] without espeak-ng."""
    import io
    import shutil
    import subprocess

    import soundfile as sf

    from cadenza.audio import resample

    exe = shutil.which("espeak-ng") or shutil.which("espeak")
    if exe is None:
        return []
    n = int(seconds * SAMPLE_RATE)
    out = []
    for text in SENTENCES:
        try:
            wav = subprocess.run(
                [exe, "--stdout", "-s", "140", text], capture_output=True, timeout=30, check=True
            ).stdout
            y, sr = sf.read(io.BytesIO(wav), dtype="float32")
        except (subprocess.SubprocessError, OSError, RuntimeError):
            continue
        y = resample(y=y if y.ndim == 1 else y.mean(1), orig_sr=sr, sr=SAMPLE_RATE)
        y = np.tile(y, int(np.ceil(n / max(y.size, 1))))[:n] if y.size else np.zeros(n, np.float32)
        out.append(y.astype(np.float32))
    return out
