"""retrieval/ingest_steps.py: what every ingest lane (pool process, Ray worker) sets up for itself."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# A lane's memory pattern: per track, arrays of a few to ~30 MB (audio, an STFT-sized temporary) of
# varying size, allocated, touched and freed. Prints the minor page faults of 16 such tracks.
_TRACKS = """
import resource, sys
import numpy as np
from retrieval.ingest_steps import keep_freed_memory
if sys.argv[1] == "1":
    assert keep_freed_memory()
def track(n):
    y = np.ones(n, np.float32)
    s = np.abs(np.fft.rfft(y.reshape(-1, 1024), axis=1))
    return float((s ** 0.5).sum())
track(16384 * 60)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for sec in (240, 60, 180, 30, 240, 90, 200, 45) * 2:
    track(16384 * sec)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep: bool) -> int:
    # A fresh process each: the setting is process-wide and glibc's state depends on the history.
    out = subprocess.run(
        [sys.executable, "-c", _TRACKS, "1" if keep else "0"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_a_lane_keeps_freed_memory_instead_of_faulting_it_in_per_track():
    default, kept = _faults(False), _faults(True)
    # Measured: ~24,800 faults with glibc's defaults, ~1,500 kept (every page of every track's arrays
    # zeroed again by the kernel, against only the first track's).
    assert kept * 5 < default, (kept, default)
