"""Decoding real files of every supported container, and refusing bad ones with one clear line."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.audio import DecodeOptions, content_hash, downmix, load_audio
from cadenza.decode_sandbox import decode_in_subprocess
from cadenza.errors import InputError
from cadenza.synth_audio import SR, tone, write_audio


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
    part = load_audio(path=path, options=DecodeOptions(offset_s=2.0, duration_s=1.5))
    assert abs(part.size - 1.5 * SR) <= 1
    assert abs(_dominant_hz(part) - 880) < 3


def test_stereo_is_mixed_down(tmp_path):
    import soundfile as sf

    t = np.arange(SR) / SR
    st = np.stack([np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 300 * t)], axis=1) * 0.2
    sf.write(tmp_path / "st.wav", st, SR)
    y = load_audio(path=tmp_path / "st.wav")
    assert y.ndim == 1 and abs(np.abs(y).max() - 0.2) < 0.01


@pytest.mark.parametrize("channels", [1, 2, 3, 6])
def test_downmix_is_the_channel_mean(channels):
    data = np.random.default_rng(channels).standard_normal((4_001, channels)).astype(np.float32)
    y = downmix(data)
    assert y.dtype == np.float32 and y.shape == (4_001,)
    assert np.abs(y - data.mean(axis=1)).max() < 1e-6
    if channels <= 2:  # halving is exact: the same samples as before
        assert np.array_equal(y, data.mean(axis=1))


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
        load_audio(path=path, options=DecodeOptions(max_seconds=3.0))


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
    boxed = decode_in_subprocess(path=path, options=DecodeOptions(timeout_s=30))
    assert np.allclose(direct, boxed)
    bad = tmp_path / "bad.ogg"
    bad.write_bytes(b"OggS" + bytes(2000))
    with pytest.raises(InputError):
        decode_in_subprocess(path=bad, options=DecodeOptions(timeout_s=30))
    # A memory bound far too small for the decoder: the child dies, the caller gets an InputError.
    with pytest.raises(InputError):
        decode_in_subprocess(path=path, options=DecodeOptions(timeout_s=30), memory_bytes=64 << 20)


def test_content_hash_streams(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc" * 1_000_000)
    import hashlib

    assert content_hash(p) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()


# --- pre-started decode children (DecodeWorkers) ---------------------------------------------------


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return False


def _gone(pids: list[int], wait_s: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + wait_s
    while any(_running(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(_running(p) for p in pids)


def _refilled(workers, wait_s: float = 30.0) -> list[int]:
    """The pids of the ready children once the background refill has started all of them."""
    import time

    deadline = time.monotonic() + wait_s
    while len(workers._ready) < workers.size and time.monotonic() < deadline:
        time.sleep(0.02)
    return [p.pid for p in workers._ready]


def test_prestarted_children_decode_the_same_each_once_and_close(tmp_path):
    from cadenza.decode_sandbox import DecodeWorkers

    path = write_audio(tmp_path / "t.wav", tone(hz=440.0, seconds=4.0))
    workers = DecodeWorkers(2)
    try:
        first = decode_in_subprocess(path=path, workers=workers)
        waiting = _refilled(workers)
        assert len(waiting) == 2 and all(_running(p) for p in waiting), (
            "replacements wait for the next uploads"
        )
        second = decode_in_subprocess(path=path, workers=workers)
        assert waiting[0] not in [p.pid for p in workers._ready] and _gone([waiting[0]]), (
            "one upload per child"
        )
        np.testing.assert_array_equal(first, decode_in_subprocess(path=path))
        np.testing.assert_array_equal(first, second)
        # A child that fails (here: a file it cannot read) is an InputError like a fresh child's.
        (tmp_path / "bad.mp3").write_bytes(b"not audio at all" * 100)
        with pytest.raises(InputError, match="bad.mp3"):
            decode_in_subprocess(path=tmp_path / "bad.mp3", workers=workers)
        idle = _refilled(workers)
    finally:
        workers.close()
    assert _gone(idle), "close() ends the idle children"
    assert workers.take() is None


def test_prestarted_child_keeps_the_time_limit_and_the_group_kill(tmp_path, monkeypatch):
    from cadenza import decode_sandbox

    pid_file = tmp_path / "pids"
    # Reads its job like a real one, starts a grandchild (as the ffmpeg fallback does), hangs.
    monkeypatch.setattr(
        decode_sandbox,
        "_WORKER_CODE",
        "import os, subprocess, sys, time\n"
        "sys.stdin.readline()\n"
        "g = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pid_file)!r}, 'w').write(f'{{os.getpid()}} {{g.pid}}')\n"
        "time.sleep(300)\n",
    )
    path = write_audio(tmp_path / "t.wav", tone(hz=440.0, seconds=2.0))
    workers = decode_sandbox.DecodeWorkers(1)
    try:
        with pytest.raises(InputError, match=r"took longer than 1 s"):
            decode_sandbox.decode_in_subprocess(
                path=path, options=DecodeOptions(timeout_s=1.0), workers=workers
            )
        pids = [int(p) for p in pid_file.read_text().split()]
        assert len(pids) == 2 and _gone(pids), "the child and its grandchild die at the limit"
    finally:
        workers.close()


def test_prestarted_child_keeps_the_memory_limit(tmp_path):
    from cadenza.decode_sandbox import DecodeWorkers

    # 20 s: its buffers (1.3 MB) need new mappings, which the limit refuses; a 2-s file's fitted in the
    # child's free heap or not depending on what it had imported, which made the check luck.
    path = write_audio(tmp_path / "t.wav", tone(hz=440.0, seconds=20.0))
    workers = DecodeWorkers(1)
    try:
        # 32 MB of address space is less than the decoder needs: the child fails inside its limit ...
        with pytest.raises(
            InputError, match=r"could not decode t\.wav \((it needed too much memory|the decoder crashed)\)"
        ):
            decode_in_subprocess(path=path, workers=workers, memory_bytes=32 << 20)
        # ... and the next pre-started child, with the default limit, decodes the same file.
        assert decode_in_subprocess(path=path, workers=workers).size == 20 * SR
    finally:
        workers.close()
