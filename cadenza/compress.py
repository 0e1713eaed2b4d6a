"""Compressing decoded audio for keeping: float samples → MP3 bytes with the ffmpeg that
``imageio-ffmpeg`` ships (no system ffmpeg needed).

Only our own decoded samples go in (never an untrusted file), through a pipe, with a time limit.
"""

from __future__ import annotations

import subprocess

import numpy as np

from cadenza.errors import CadenzaError

#: MP3 at this bitrate: a minute of 16-kHz mono is about 360 KB and still fine for comparing by ear.
KEEP_BITRATE = "48k"
ENCODE_TIMEOUT_S = 30.0


class EncodeError(CadenzaError):
    """ffmpeg could not compress the audio (missing binary, crash, time limit)."""

    status_code = 500


def encode_mp3(*, audio: np.ndarray, sr: int, bitrate: str = KEEP_BITRATE) -> bytes:
    """``[n]`` mono float samples → MP3 bytes."""
    import imageio_ffmpeg

    pcm = np.clip(np.nan_to_num(audio.astype(np.float32)), -1.0, 1.0).astype("<f4").tobytes()
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
        "-f", "f32le", "-ar", str(sr), "-ac", "1", "-i", "pipe:0",
        "-c:a", "libmp3lame", "-b:a", bitrate, "-f", "mp3", "pipe:1",
    ]  # fmt: skip
    try:
        done = subprocess.run(cmd, input=pcm, capture_output=True, timeout=ENCODE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EncodeError(f"could not compress the clip ({type(exc).__name__})") from exc
    if done.returncode != 0 or not done.stdout:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise EncodeError(f"could not compress the clip (ffmpeg: {tail[0][:200]})")
    return done.stdout
