"""Generate the bad-input corpus under tests/data/bad/ (or a folder given on the command line).

Each file is something a stranger might upload or point ``cadenza ingest`` at. The table
``EXPECTED`` says what must happen: ``"reject"`` (a clear InputError / HTTP 4xx) or
``"accept"`` (odd but valid audio that must work). Everything is synthesized here, so the
corpus is reproducible and nothing big is committed.

    python tests/data/make_bad.py [OUT_DIR]
"""

from __future__ import annotations

import gzip
import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16_000

#: file name -> expected outcome for ingest and search
EXPECTED: dict[str, str] = {}


def _tone(seconds: float, sr: int = SR, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    y = (
        0.3 * np.sin(2 * np.pi * 220 * t)
        + 0.2 * np.sin(2 * np.pi * 277.2 * t)
        + 0.2 * np.sin(2 * np.pi * 329.6 * t)
    )
    y = y.astype(np.float32)
    return np.repeat(y[:, None], channels, axis=1) if channels > 1 else y


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg_out(args: list[str], stdin: bytes | None = None) -> bytes:
    """What ffmpeg writes to stdout for ``args`` (its input and output options, without the binary,
    ``-v error`` and the output pipe)."""
    cmd = [_ffmpeg(), "-v", "error", *args, "pipe:1"]
    return subprocess.run(cmd, input=stdin, capture_output=True, check=True).stdout


def _encode(y: np.ndarray, fmt: str, sr: int = SR, extra: tuple[str, ...] = ()) -> bytes:
    """Encode mono float audio with ffmpeg (mp3, m4a, ogg, ...) through pipes."""
    args = ["-f", "f32le", "-ar", str(sr), "-ac", "1", "-i", "pipe:0", *extra, "-f", fmt]
    return _ffmpeg_out(args, stdin=y.astype(np.float32).tobytes())


def _sf_bytes(y: np.ndarray, fmt: str, subtype: str | None = None, sr: int = SR) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, y, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        import struct

        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    import struct

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * 4 for _ in range(4))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def build(out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, tuple[bytes, str]] = {}
    good = _tone(12.0)
    mp3 = _encode(good, "mp3", extra=("-b:a", "64k"))
    flac = _sf_bytes(good, "FLAC")
    ogg = _sf_bytes(good, "OGG", "VORBIS")
    wav = _sf_bytes(good, "WAV", "PCM_16")

    # empty and truncated
    for ext in ("mp3", "wav", "flac", "ogg"):
        files[f"zero_bytes.{ext}"] = (b"", "reject")
    files["truncated.mp3"] = (mp3[:600], "reject")
    files["truncated.flac"] = (flac[: len(flac) // 20], "reject")
    files["truncated.ogg"] = (ogg[:300], "reject")
    files["truncated_header_only.wav"] = (wav[:44], "reject")
    # not audio at all, under audio names
    files["text_renamed.mp3"] = (b"This is not audio. " * 200, "reject")
    files["image_renamed.mp3"] = (_png(), "reject")
    files["html_renamed.wav"] = (b"<html><body><script>alert(1)</script></body></html>" * 20, "reject")
    files["json_renamed.flac"] = (b'{"not": "audio"}' * 50, "reject")
    files["gzip_renamed.ogg"] = (gzip.compress(b"\x00" * 10000), "reject")
    files["random_bytes.mp3"] = (
        np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes(),
        "reject",
    )
    files["midi_renamed.mp3"] = (
        b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00",
        "reject",
    )
    files["id3_only.mp3"] = (b"ID3\x03\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10, "reject")
    # a valid container with no audio stream (video only)
    video = _ffmpeg_out(
        ["-f", "lavfi", "-i", "color=c=black:s=16x16:d=2", "-an", "-c:v", "mpeg4", "-f", "mp4",
         "-movflags", "frag_keyframe+empty_moov"]
    )  # fmt: skip
    files["video_no_audio.mp4"] = (video, "reject")
    files["video_no_audio.m4a"] = (video, "reject")
    # corrupt headers
    files["corrupt_header.wav"] = (b"RIFX" + b"\xff" * 40 + wav[44:], "reject")
    files["corrupt_header.flac"] = (b"fLaC" + b"\xff" * 60 + flac[64:], "reject")
    files["corrupt_header.ogg"] = (b"OggS" + b"\x13" * 60 + ogg[64:], "reject")
    files["wav_zero_frames.wav"] = (_sf_bytes(np.zeros(0, np.float32), "WAV", "PCM_16"), "reject")
    # numerically bad
    nan = good.copy()
    nan[1000:2000] = np.nan
    files["nan_float.wav"] = (_sf_bytes(nan, "WAV", "FLOAT"), "reject")
    inf = good.copy()
    inf[5000] = np.inf
    files["inf_float.wav"] = (_sf_bytes(inf, "WAV", "FLOAT"), "reject")
    # too short / silent
    files["one_second.wav"] = (_sf_bytes(_tone(1.0), "WAV", "PCM_16"), "reject")
    files["tenth_second.mp3"] = (_encode(_tone(0.1), "mp3"), "reject")
    files["silence.wav"] = (_sf_bytes(np.zeros(SR * 12, np.float32), "WAV", "PCM_16"), "reject")
    files["silence.mp3"] = (_encode(np.zeros(SR * 12, np.float32), "mp3"), "reject")
    # hostile names (the content is fine: the name must never reach a shell or escape a folder)
    files["a;rm -rf ~;$(reboot)`id`.wav"] = (wav, "accept")
    files["..%2F..%2Fetc%2Fpasswd.wav"] = (wav, "accept")
    files["<img src=x onerror=alert(1)>.wav"] = (wav, "accept")
    # odd but valid: must work
    hires = np.tile(_tone(6.0, sr=96_000)[:, None], (1, 8)).astype(np.float32) * 0.5
    files["hires_96k_8ch.wav"] = (_sf_bytes(hires, "WAV", "PCM_24", sr=96_000), "accept")
    files["good_reference.flac"] = (flac, "accept")
    # the name or the header lies
    files["mp3_named.wav"] = (mp3, "accept")  # the content decides, not the extension
    lying = bytearray(wav)
    data_at = lying.find(b"data")
    lying[4:8] = lying[data_at + 4 : data_at + 8] = struct.pack("<I", 0xFFFFFFF0)  # claims ~4 GB
    files["lying_length.wav"] = (bytes(lying), "accept")
    one_hz = bytearray(wav)
    one_hz[24:28] = struct.pack("<I", 1)  # 1 Hz: 192,000 samples claim 53 hours
    files["one_hz_rate.wav"] = (bytes(one_hz), "reject")
    # 3 hours: a low-bitrate mono MP3 (~11 MB); must be rejected by its duration, cheaply
    three_hours = _ffmpeg_out(
        ["-f", "lavfi", "-i", "sine=frequency=220:sample_rate=8000:duration=10800", "-ac", "1", "-b:a", "8k",
         "-f", "mp3"]
    )  # fmt: skip
    files["three_hours.mp3"] = (three_hours, "reject")

    expected = {}
    for name, (data, outcome) in files.items():
        (out / name).write_bytes(data)
        expected[name] = outcome
    return expected


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "bad"
    result = build(target)
    print(f"wrote {len(result)} files to {target}")
