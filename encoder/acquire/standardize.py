"""Convert any downloaded media to a uniform 16 kHz mono MP3 with our own ffmpeg call.

We never rely on yt-dlp's post-processors: yt-dlp skips them when the source is already
MP3 and then silently ignores the sample-rate arguments. The ffmpeg binary is the static
one shipped by the ``imageio-ffmpeg`` wheel (libmp3lame included), so nothing depends
on the system's ffmpeg.

A download that ffmpeg cannot open is *not audio*; one whose decoded length falls short
of what its header declares (MP3 Xing frame count, FLAC STREAMINFO) is *truncated*.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cadenza.errors import InputError

SAMPLE_RATE = 16_000
BITRATE = "64k"

_DURATION = re.compile(r"^\s*Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", re.MULTILINE)
_OUT_TIME = re.compile(r"^out_time_us=(\d+)\s*$", re.MULTILINE)


class UnusableMedia(InputError):
    """The downloaded file is not usable audio; ``str(err)`` is the manifest reason."""


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@dataclass(frozen=True)
class Standardized:
    path: Path
    declared_s: float | None  # what the source's header claims (None when unknown)
    decoded_s: float  # what ffmpeg actually decoded and encoded


def _last_error_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "rror" in ln or "nvalid" in ln or "matches no streams" in ln:
            return ln[:200]
    return lines[-1][:200] if lines else "no output"


def standardize(
    src: Path,
    dst: Path,
    *,
    sample_rate: int = SAMPLE_RATE,
    bitrate: str = BITRATE,
    metadata: Mapping[str, str] | None = None,
    timeout_s: float = 600.0,
    truncation_tolerance_s: float = 1.0,
) -> Standardized:
    """Decode ``src`` fully and write ``dst`` as ``sample_rate`` Hz mono MP3 (atomically).

    Raises :class:`UnusableMedia` (reason: ``not audio: ...``, ``truncated: ...``) when the
    source cannot be used; ``dst`` is then left untouched.
    """
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.part")
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-progress", "pipe:1", "-i", str(src)]
    cmd += ["-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(sample_rate)]
    cmd += ["-c:a", "libmp3lame", "-b:a", bitrate, "-map_metadata", "-1", "-id3v2_version", "3"]
    for key, value in (metadata or {}).items():
        if key in ("title", "artist", "composer", "album", "genre", "date", "comment"):
            cmd += ["-metadata", f"{key}={value}"]
    cmd += ["-f", "mp3", "-y", str(tmp)]
    try:
        # Own session: a Ctrl-C at the terminal goes to our process group; ffmpeg must not
        # die of it half-way (that would look like a broken file), it finishes in seconds.
        proc = subprocess.run(
            cmd, capture_output=True, text=True, errors="replace", timeout=timeout_s, start_new_session=True
        )
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        raise UnusableMedia(f"not audio: ffmpeg did not finish within {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise UnusableMedia(f"not audio: ffmpeg could not decode it ({_last_error_line(proc.stderr)})")
    times = _OUT_TIME.findall(proc.stdout)
    decoded = int(times[-1]) / 1e6 if times else 0.0
    match = _DURATION.search(proc.stderr)
    declared = None
    if match:
        h, m, s = match.groups()
        declared = int(h) * 3600 + int(m) * 60 + float(s)
    if decoded <= 0.0:
        tmp.unlink(missing_ok=True)
        raise UnusableMedia("not audio: no audio decoded")
    if declared is not None and declared - decoded > max(truncation_tolerance_s, 0.02 * declared):
        tmp.unlink(missing_ok=True)
        raise UnusableMedia(
            f"truncated: decodes to {decoded:.1f} s of the {declared:.1f} s its header declares"
        )
    tmp.replace(dst)
    return Standardized(path=dst, declared_s=declared, decoded_s=decoded)
