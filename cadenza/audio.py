"""Decoding audio files into mono float32 at a fixed rate, safely.

``load_audio`` tries libsndfile (WAV, FLAC, OGG/Vorbis, Opus, MP3) first because it is the
fastest, then PyAV (M4A/AAC and anything FFmpeg knows), then the static ``ffmpeg`` binary
from imageio-ffmpeg under a time limit. Every failure a person can fix becomes one
:class:`~cadenza.errors.InputError` line. :mod:`cadenza.decode_sandbox` runs the same decode in
a child process with a wall-clock and an address-space limit, for untrusted uploads.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadenza.errors import InputError

#: Library tracks longer than this are refused (a 4-h file is almost surely a mistake).
DEFAULT_MAX_SECONDS = 4 * 3600.0
AUDIO_EXTENSIONS = frozenset({".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4"})


@dataclass(frozen=True)
class DecodeOptions:
    """What to decode and within which limits: the one record :func:`load_audio` and its sandboxed
    twin (:func:`cadenza.decode_sandbox.decode_in_subprocess`) share."""

    sr: int = 16_000  # the output rate
    offset_s: float = 0.0  # decode from here ...
    duration_s: float | None = None  # ... this much (None: to the end)
    timeout_s: float = 60.0  # the ffmpeg stage's wall-clock limit
    max_seconds: float = DEFAULT_MAX_SECONDS  # more audio than this is refused


class _Fallback(Exception):
    """This decoder cannot read the file; try the next one."""


def content_hash(path: Path) -> str:
    """sha256 of the file's bytes, read in 1 MiB chunks (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def resample(*, y: np.ndarray, orig_sr: int, sr: int) -> np.ndarray:
    """``y`` [n] float32 at ``orig_sr`` → [m] float32 at ``sr`` (soxr HQ, else polyphase)."""
    if orig_sr == sr:
        return y.astype(np.float32, copy=False)
    try:
        import soxr

        return np.asarray(soxr.resample(y, orig_sr, sr, quality="HQ"), dtype=np.float32)
    except ImportError:  # pragma: no cover - soxr ships with librosa
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(orig_sr), int(sr))
        return resample_poly(y, sr // g, orig_sr // g).astype(np.float32)


def _too_long(name: str, seconds: float, max_seconds: float) -> InputError:
    return InputError(
        f"{name} is {seconds / 60:.1f} min long; the limit is {max_seconds / 60:.1f} min — trim it first"
    )


def _read_soundfile(path: Path, opts: DecodeOptions) -> tuple[np.ndarray, int]:
    import soundfile as sf

    offset_s, duration_s, max_seconds = opts.offset_s, opts.duration_s, opts.max_seconds

    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile: "Format not recognised" and friends
        raise _Fallback(str(exc)) from None
    if info.frames <= 0 or info.samplerate <= 0:
        raise _Fallback("libsndfile reports no frames")
    total_s = info.frames / info.samplerate
    wanted = max(0.0, total_s - offset_s) if duration_s is None else min(duration_s, total_s - offset_s)
    if wanted > max_seconds:
        raise _too_long(path.name, wanted, max_seconds)
    start = int(round(offset_s * info.samplerate))
    frames = -1 if duration_s is None else int(round(duration_s * info.samplerate))
    try:
        data, rate = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as exc:
        raise _Fallback(str(exc)) from None
    return downmix(data), int(rate)


def downmix(data: np.ndarray) -> np.ndarray:
    """``[n, channels]`` float32 → ``[n]``: the channels' mean, summed column by column.

    ``data.mean(axis=1)`` reduces over the short, strided axis: 60 ms against 5 ms for 106 s
    of 44.1-kHz stereo, which made it a third of the decode on real recordings.
    """
    if data.shape[1] == 1:
        return data[:, 0]
    y = data[:, 0].copy()
    for c in range(1, data.shape[1]):
        y += data[:, c]
    y *= np.float32(1.0 / data.shape[1])
    return y


def _read_pyav(path: Path, opts: DecodeOptions) -> tuple[np.ndarray, int]:
    import av

    sr, offset_s, duration_s, max_seconds = opts.sr, opts.offset_s, opts.duration_s, opts.max_seconds

    try:
        container = av.open(str(path))
    except Exception as exc:
        raise _Fallback(str(exc)) from None
    with container:
        if not container.streams.audio:
            raise InputError(f"{path.name} has no audio stream; upload a file that contains sound")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sr)
        skip = int(round(offset_s * sr))
        limit = max_seconds if duration_s is None else min(duration_s, max_seconds)
        keep = int(round(limit * sr))
        chunks: list[np.ndarray] = []
        got = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray().reshape(-1)
                    if skip:
                        drop = min(skip, arr.size)
                        arr, skip = arr[drop:], skip - drop
                    chunks.append(arr)
                    got += arr.size
                if got > keep:
                    if duration_s is None:
                        raise _too_long(path.name, got / sr, max_seconds)
                    break
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except InputError:
            raise
        except Exception as exc:
            raise _Fallback(str(exc)) from None
    y = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if duration_s is not None:
        y = y[: int(round(duration_s * sr))]
    return y.astype(np.float32, copy=False), sr


def _read_ffmpeg(path: Path, opts: DecodeOptions) -> tuple[np.ndarray, int]:
    import imageio_ffmpeg

    sr, offset_s, duration_s, max_seconds = opts.sr, opts.offset_s, opts.duration_s, opts.max_seconds
    timeout_s = opts.timeout_s

    limit = max_seconds if duration_s is None else min(duration_s, max_seconds)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error"]
    if offset_s > 0:
        cmd += ["-ss", f"{offset_s:.3f}"]
    # Ask for one sample more than allowed so "too long" is detectable without decoding it all.
    cmd += [
        "-i",
        str(path),
        "-t",
        f"{limit + 1.0 / sr:.4f}",
        "-vn",
        "-ac",
        "1",
        "-ar",
        str(sr),
        "-f",
        "f32le",
        "-",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise InputError(
            f"decoding {path.name} took longer than {timeout_s:.0f} s; try a shorter file"
        ) from None
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        last = msg[-1] if msg else f"exit status {proc.returncode}"
        if "does not contain any stream" in last or "matches no streams" in last:
            raise InputError(f"{path.name} has no audio stream; upload a file that contains sound")
        raise _Fallback(last)
    y = np.frombuffer(proc.stdout[: len(proc.stdout) // 4 * 4], dtype="<f4").astype(np.float32)
    if duration_s is None and y.size > int(round(max_seconds * sr)):
        raise _too_long(path.name, y.size / sr, max_seconds)
    return y, sr


def load_audio(*, path: Path, options: DecodeOptions = DecodeOptions()) -> np.ndarray:
    """Decode ``path`` (or its ``[offset_s, offset_s + duration_s)`` part) → ``[n]`` mono float32 at ``sr``.

    Raises :class:`InputError` for a missing/empty/non-audio file, a file with no audio
    stream, NaN/inf samples, or more than ``max_seconds`` of audio.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist or is not a file; check the path")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes); upload the audio file itself")
    offset_s, duration_s = options.offset_s, options.duration_s
    if offset_s < 0 or (duration_s is not None and duration_s <= 0):
        raise InputError(
            f"bad time range offset={offset_s} duration={duration_s}; use offset ≥ 0 and duration > 0"
        )
    errors: list[str] = []
    y: np.ndarray | None = None
    rate = options.sr
    for name, reader in (("soundfile", _read_soundfile), ("pyav", _read_pyav), ("ffmpeg", _read_ffmpeg)):
        try:
            y, rate = reader(path, options)
            break
        except _Fallback as exc:
            errors.append(f"{name}: {exc}")
    if y is None:
        detail = errors[-1] if errors else "unknown format"
        raise InputError(
            f"{path.name} is not an audio file Cadenza can decode ({detail[:120]}); use MP3, WAV, FLAC, OGG or M4A"
        )
    y = resample(y=np.asarray(y, dtype=np.float32), orig_sr=rate, sr=options.sr)
    return check_audio(y=y, name=path.name, sr=options.sr, max_seconds=options.max_seconds)


def check_audio(
    *, y: np.ndarray, name: str, sr: int = 16_000, max_seconds: float = DEFAULT_MAX_SECONDS
) -> np.ndarray:
    """Validate decoded audio ``[n]``: non-empty, finite, not too long. Returns it as float32."""
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if y.size == 0:
        raise InputError(f"{name} decoded to no audio at all; check that the file plays")
    if not np.all(np.isfinite(y)):
        raise InputError(f"{name} contains invalid samples (NaN or infinity); re-export the file")
    if y.size > int(round(max_seconds * sr)) + 1:
        raise _too_long(name, y.size / sr, max_seconds)
    return y
