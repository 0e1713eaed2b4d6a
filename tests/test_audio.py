"""Decoding real files of every supported container, and refusing bad ones with one clear line."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.audio import content_hash, decode_in_subprocess, load_audio
from cadenza.errors import InputError
from tests.helpers_audio import SR, tone, write_audio


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    # 440 Hz for 3 s at 44.1 kHz: exercises resampling too.
    t = np.arange(3 * 44_100) / 44_100
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _dominant_hz(y: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return float(np.fft.rfftfreq(y.size, 1 / SR)[np.argmax(spec)])


@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg", ".mp3", ".m4a"])
def test_formats_decode_to_16k_mono(tmp_path, signal, ext):
    path = write_audio(tmp_path / f"a{ext}", signal, sr=44_100)
    y = load_audio(path=path)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(y.size / SR - 3.0) < 0.15  # codecs pad a little
    assert abs(_dominant_hz(y) - 440) < 3
    assert 0.1 < np.abs(y).max() < 0.5


def test_offset_and_duration(tmp_path):
    y = np.concatenate([tone(hz=440, seconds=2), tone(hz=880, seconds=2)])
    path = write_audio(tmp_path / "two.wav", y)
    part = load_audio(path=path, offset_s=2.0, duration_s=1.5)
    assert abs(part.size - 1.5 * SR) <= 1
    assert abs(_dominant_hz(part) - 880) < 3


def test_stereo_is_mixed_down(tmp_path):
    import soundfile as sf

    t = np.arange(SR) / SR
    st = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 300 * t)], axis=1) * 0.2
    sf.write(tmp_path / "st.wav", st, SR)
    y = load_audio(path=tmp_path / "st.wav")
    assert y.ndim == 1 and abs(np.abs(y).max() - 0.2) < 0.01


def test_rejections_are_one_line(tmp_path):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp3"
    text.write_text("this is not audio at all\n" * 50)
    for path, pattern in [
        (empty, "empty"),
        (text, "not an audio file"),
        (tmp_path / "missing.wav", "does not exist"),
    ]:
        with pytest.raises(InputError, match=pattern) as info:
            load_audio(path=path)
        assert "\n" not in str(info.value)


def test_too_long_is_refused(tmp_path):
    path = write_audio(tmp_path / "long.wav", tone(hz=220, seconds=4))
    with pytest.raises(InputError, match="limit"):
        load_audio(path=path, max_seconds=3.0)


def test_nan_samples_are_refused(tmp_path):
    import soundfile as sf

    y = tone(hz=220, seconds=1).astype(np.float32)
    y[100] = np.nan
    sf.write(tmp_path / "nan.wav", y, SR, subtype="FLOAT")
    with pytest.raises(InputError, match="NaN"):
        load_audio(path=tmp_path / "nan.wav")


def test_video_without_audio_has_no_audio_stream(tmp_path):
    import subprocess

    import imageio_ffmpeg

    out = tmp_path / "silent.mp4"
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         "color=c=black:s=32x32:d=1", "-c:v", "mpeg4", str(out)],
        check=True, timeout=60,
    )  # fmt: skip
    with pytest.raises(InputError, match="no audio stream"):
        load_audio(path=out)


def test_subprocess_decode_matches_and_bounds(tmp_path, signal):
    path = write_audio(tmp_path / "a.flac", signal, sr=44_100)
    direct = load_audio(path=path)
    boxed = decode_in_subprocess(path=path, timeout_s=30)
    assert np.allclose(direct, boxed)
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"OggS" + bytes(2000))
    with pytest.raises(InputError):
        decode_in_subprocess(path=bad, timeout_s=30)
    # A memory bound far too small for the decoder: the child dies, the caller gets an InputError.
    with pytest.raises(InputError):
        decode_in_subprocess(path=path, timeout_s=30, memory_bytes=64 << 20)


def test_content_hash_streams(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc" * 1_000_000)
    import hashlib

    assert content_hash(p) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()
