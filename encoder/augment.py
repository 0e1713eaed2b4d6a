"""Degradations of mono 16 kHz float32 audio, for training views and robustness tests.

Every function is pure and keyword-only: ``y`` ``[n]`` float32 in → ``[n]`` float32 out (the
same length, except :func:`time_stretch`). Random choices come from the ``rng`` passed in.
For rendered scores prefer re-rendering with ``transpose`` / ``tempo_scale``
(:func:`encoder.render.render`) over :func:`pitch_shift` / :func:`time_stretch`: it is exact
and cheaper.
"""

from __future__ import annotations

import subprocess

import numpy as np

from encoder.features import SAMPLE_RATE, ParameterError


def _mono(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or y.size == 0:
        raise ParameterError(f"expected non-empty mono audio [n], got shape {y.shape}")
    return y.astype(np.float32, copy=False)


def gain(*, y: np.ndarray, db: float) -> np.ndarray:
    """Scale by ``db`` decibels."""
    return (_mono(y) * np.float32(10.0 ** (db / 20.0))).astype(np.float32)


def eq(
    *,
    y: np.ndarray,
    sr: int = SAMPLE_RATE,
    kind: str,
    freq_hz: float,
    gain_db: float = 0.0,
    q: float = 1.0,
) -> np.ndarray:
    """Filter: ``kind`` = ``lowpass`` / ``highpass`` (4th-order Butterworth at ``freq_hz``) or
    ``peaking`` (a bell of ``gain_db`` at ``freq_hz`` with quality ``q``, RBJ cookbook)."""
    import scipy.signal

    y = _mono(y)
    if not 0 < freq_hz < sr / 2:
        raise ParameterError(f"freq_hz must be in (0, {sr / 2}), got {freq_hz}")
    if kind in ("lowpass", "highpass"):
        sos = scipy.signal.butter(4, freq_hz, btype=kind, fs=sr, output="sos")
        return scipy.signal.sosfilt(sos, y).astype(np.float32)
    if kind == "peaking":
        a = 10.0 ** (gain_db / 40.0)
        w0 = 2.0 * np.pi * freq_hz / sr
        alpha = np.sin(w0) / (2.0 * q)
        b_coef = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
        a_coef = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
        return scipy.signal.lfilter(b_coef / a_coef[0], a_coef / a_coef[0], y).astype(np.float32)
    raise ParameterError(f"eq kind must be lowpass, highpass or peaking, got {kind!r}")


def random_eq(*, y: np.ndarray, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One random filter: a low-pass (2–6 kHz), a high-pass (100–500 Hz) or a ±9 dB bell."""
    choice = rng.integers(3)
    if choice == 0:
        return eq(y=y, sr=sr, kind="lowpass", freq_hz=float(rng.uniform(2000, 6000)))
    if choice == 1:
        return eq(y=y, sr=sr, kind="highpass", freq_hz=float(rng.uniform(100, 500)))
    return eq(
        y=y,
        sr=sr,
        kind="peaking",
        freq_hz=float(np.exp(rng.uniform(np.log(200), np.log(5000)))),
        gain_db=float(rng.choice([-1, 1]) * rng.uniform(4, 9)),
        q=float(rng.uniform(0.5, 2.0)),
    )


def add_noise(*, y: np.ndarray, rng: np.random.Generator, snr_db: float | None = None) -> np.ndarray:
    """Add white-ish noise at ``snr_db`` (drawn in 5–30 dB when None) relative to the signal power."""
    y = _mono(y)
    if snr_db is None:
        snr_db = float(rng.uniform(5.0, 30.0))
    power = float(np.mean(y.astype(np.float64) ** 2))
    if power <= 0:
        return y.copy()
    noise = rng.standard_normal(y.size)
    if rng.random() < 0.5:  # half the time pink-ish: more like room / tape hiss than pure white
        noise = np.cumsum(noise) * 0.02
        noise -= np.convolve(noise, np.ones(401) / 401, mode="same")
    noise *= np.sqrt(power / 10.0 ** (snr_db / 10.0) / max(float(np.mean(noise**2)), 1e-20))
    return (y + noise).astype(np.float32)


def reverb(
    *,
    y: np.ndarray,
    rng: np.random.Generator,
    sr: int = SAMPLE_RATE,
    rt60: float | None = None,
    wet: float | None = None,
) -> np.ndarray:
    """Convolve with a synthetic room: exponentially decaying noise (``rt60`` 0.3–2.0 s), mixed
    ``wet`` (0.2–0.6) with the dry signal; the output keeps the input's length and RMS."""
    import scipy.signal

    y = _mono(y)
    rt60 = float(rng.uniform(0.3, 2.0)) if rt60 is None else rt60
    wet = float(rng.uniform(0.2, 0.6)) if wet is None else wet
    n = max(int(rt60 * sr), 16)
    t = np.arange(n) / sr
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir /= np.sqrt(np.sum(ir**2))
    tail = scipy.signal.fftconvolve(y, ir)[: y.size]
    out = (1.0 - wet) * y + wet * tail
    rms_in = np.sqrt(np.mean(y.astype(np.float64) ** 2))
    rms_out = np.sqrt(np.mean(out**2))
    if rms_out > 0:
        out *= rms_in / rms_out
    return out.astype(np.float32)


def phone_band(*, y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``y`` as a phone line would carry it: 4th-order Butterworth band-pass 300–3400 Hz,
    resampled through 8 kHz, and soft-clipped (tanh at 2× drive) as a cheap loudspeaker would."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    y = _mono(y)
    sos = butter(4, [300.0, 3400.0], btype="bandpass", fs=sr, output="sos")
    out = sosfiltfilt(sos, y.astype(np.float64))
    out = resample_poly(resample_poly(out, 1, sr // 8000), sr // 8000, 1)[: y.size]
    peak = max(float(np.max(np.abs(out))), 1e-9)
    return (np.tanh(2.0 * out / peak) / np.tanh(2.0) * peak).astype(np.float32)


def mp3_roundtrip(
    *, y: np.ndarray, sr: int = SAMPLE_RATE, kbps: int | None = None, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Encode to MP3 at ``kbps`` (drawn in 32–64 when None) and decode, through ffmpeg pipes.

    The decoder's delay is removed, so the output lines up with the input sample for sample
    and has its length.
    """
    import imageio_ffmpeg

    y = _mono(y)
    if kbps is None:
        kbps = int((rng or np.random.default_rng()).choice([32, 40, 48, 56, 64]))
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    raw = ["-f", "f32le", "-ar", str(sr), "-ac", "1"]
    enc = subprocess.run(
        [
            exe,
            "-v",
            "error",
            *raw,
            "-i",
            "pipe:0",
            "-c:a",
            "libmp3lame",
            "-b:a",
            f"{kbps}k",
            "-f",
            "mp3",
            "pipe:1",
        ],
        input=np.clip(y, -1, 1).tobytes(),
        capture_output=True,
        check=False,
    )
    if enc.returncode != 0:
        raise ParameterError(f"ffmpeg could not encode MP3: {enc.stderr.decode(errors='replace')[-200:]}")
    dec = subprocess.run(
        [exe, "-v", "error", "-f", "mp3", "-i", "pipe:0", *raw, "pipe:1"],
        input=enc.stdout,
        capture_output=True,
        check=False,
    )
    if dec.returncode != 0:
        raise ParameterError(f"ffmpeg could not decode MP3: {dec.stderr.decode(errors='replace')[-200:]}")
    out = np.frombuffer(dec.stdout, dtype=np.float32)
    lag = _delay(ref=y, other=out)
    out = out[lag:]
    if out.size < y.size:
        out = np.concatenate([out, np.zeros(y.size - out.size, dtype=np.float32)])
    return out[: y.size].astype(np.float32)


def _delay(*, ref: np.ndarray, other: np.ndarray, max_lag: int = 4096) -> int:
    """Samples by which ``other`` lags ``ref`` (0..max_lag), by cross-correlating the first seconds."""
    import scipy.signal

    n = min(ref.size, other.size, 5 * SAMPLE_RATE)
    if n < 2 * max_lag or other.size <= max_lag:
        return 0
    a = ref[: n - max_lag].astype(np.float64)
    b = other[:n].astype(np.float64)
    corr = scipy.signal.correlate(b, a, mode="valid", method="fft")  # [max_lag + 1]
    return int(np.argmax(corr))


def pitch_shift(*, y: np.ndarray, sr: int = SAMPLE_RATE, semitones: float) -> np.ndarray:
    """Shift pitch by ``semitones`` keeping the length (librosa phase vocoder + resampling)."""
    import librosa

    return librosa.effects.pitch_shift(_mono(y), sr=sr, n_steps=semitones).astype(np.float32)


def time_stretch(*, y: np.ndarray, rate: float) -> np.ndarray:
    """Play ``rate`` times faster keeping the pitch: ``[n]`` → ``[≈ n / rate]``."""
    import librosa

    if rate <= 0:
        raise ParameterError(f"rate must be > 0, got {rate}")
    return librosa.effects.time_stretch(_mono(y), rate=rate).astype(np.float32)
