"""Upload decodes run in a bounded number of sandboxed children (``Services.decode``).

Unbounded, a burst of 50 uploads started 50 decode children at once (several GB of RSS in the
load benchmark). The slots make a burst wait in line; only a wait past ``decode_wait_s`` gives
a clear "busy" error, and nothing is lost: the next try decodes.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf

from assistant import services as svc_mod
from cadenza.settings import Settings

SR = 16_000


def wav_clip(seconds: float = 4.0, freq: float = 440.0) -> svc_mod.Clip:
    t = np.arange(int(seconds * SR)) / SR
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR, format="WAV")
    return svc_mod.Clip(filename="clip.wav", data=buf.getvalue())


def services(settings: Settings, wait_s: float = 60.0) -> svc_mod.Services:
    # decode needs neither the database nor the encoder
    return svc_mod.Services(settings=settings, db=None, embedder=None, decode_wait_s=wait_s)  # type: ignore[arg-type]


def test_a_full_set_of_slots_gives_a_clear_busy_error_then_decodes(settings: Settings) -> None:
    svc = services(settings, wait_s=0.2)
    n = svc_mod.decode_slot_count()
    assert n >= 2
    for _ in range(n):  # every slot taken, as by n long decodes
        assert svc.decode_slots.acquire(timeout=1)
    with pytest.raises(svc_mod.ServerBusy, match="busy decoding other uploads"):
        svc.decode(wav_clip())
    for _ in range(n):
        svc.decode_slots.release()
    y = svc.decode(wav_clip())
    assert y.dtype == np.float32 and abs(y.size - 4 * SR) <= SR // 10


def test_a_burst_never_runs_more_decodes_than_slots(settings: Settings, monkeypatch) -> None:
    import cadenza.decode_sandbox

    svc = services(settings)
    real = cadenza.decode_sandbox.decode_in_subprocess
    running, peak, lock = 0, 0, threading.Lock()

    def counting(**kw):  # the real sandboxed decode, counted
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            return real(**kw)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(cadenza.decode_sandbox, "decode_in_subprocess", counting)
    n = svc_mod.decode_slot_count()
    with ThreadPoolExecutor(max_workers=n + 4) as ex:
        out = list(ex.map(lambda i: svc.decode(wav_clip(freq=220.0 + 40 * i)), range(n + 4)))
    assert len(out) == n + 4 and all(y.size > 3 * SR for y in out)
    assert 1 <= peak <= n
