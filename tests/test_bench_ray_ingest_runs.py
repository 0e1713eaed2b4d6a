"""bench/ray_ingest_runs.py: the steady rate (the figure that separates a run's start-up and tail from its
throughput), the fresh-memory probe, and the library's dithered copies."""

from __future__ import annotations

import pytest

from bench.ray_ingest_runs import dithered_copies, fresh_memory_cpu_s_per_gb, steady_rate


def test_steady_rate_leaves_out_start_up_and_reads_through_batched_commits():
    # 10 s of start-up, then 100 tracks of 120 s of audio at 600x realtime (one every 0.2 s)...
    steady = [(10.0 + 0.2 * (i + 1), 120.0) for i in range(100)]
    assert steady_rate(steady) == pytest.approx(600.0)
    # ... also when a writer commits them 8 at a time (all 8 counted when the batch is)...
    batched = [(10.0 + 0.2 * (8 * (i // 8 + 1)), 120.0) for i in range(100)]
    assert steady_rate(batched) == pytest.approx(600.0, rel=0.05)
    # ... and with longest files first: audio, not tracks, per second.
    longest_first = []
    t = 10.0
    for i in range(100):
        audio = 240.0 - 2.0 * i
        t += audio / 600.0
        longest_first.append((t, audio))
    assert steady_rate(longest_first) == pytest.approx(600.0)
    # A slow tail (the last file alone on one of two workers) is not in the steady rate either.
    tail = [*steady, (steady[-1][0] + 5.0, 120.0)]
    assert steady_rate(tail) == pytest.approx(600.0, rel=0.02)


def test_steady_rate_needs_ten_tracks():
    assert steady_rate([(float(i), 60.0) for i in range(1, 10)]) == 0.0


def test_the_fresh_memory_probe_reports_cpu_per_gb():
    # Touching new pages always costs the kernel something (zeroing at least); a probe that touched nothing
    # (an array left unwritten, np.empty) reads ~0.0003 s/GB.
    assert 0.01 < fresh_memory_cpu_s_per_gb(mb=32) < 100.0


def test_dithered_copies_are_distinct_and_the_same_when_added_in_two_goes(tmp_path):
    import hashlib

    import numpy as np
    import soundfile as sf

    y = (np.sin(np.arange(4000) / 10.0) * 8000).astype(np.int16)
    for folder in (tmp_path / "once", tmp_path / "twice"):
        folder.mkdir()
        sf.write(str(folder / "a.wav"), y, 16000, subtype="PCM_16")
    dithered_copies(tmp_path / "once", 3)
    dithered_copies(tmp_path / "twice", 1)  # a reused workdir, then more copies
    dithered_copies(tmp_path / "twice", 3)

    def digests(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.wav"))}

    once = digests(tmp_path / "once")
    assert len(once) == 4 and len(set(once.values())) == 4
    assert digests(tmp_path / "twice") == once
