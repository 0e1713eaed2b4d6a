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


_SETTLE = """
import numpy as np
from retrieval.ingest_steps import keep_freed_memory, settle_freed_memory
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20
assert keep_freed_memory()
before = rss_mb()
for sec in (240, 60, 180, 30, 240, 90, 200, 45):
    y = np.ones(16384 * sec, np.float32)
    float((np.abs(np.fft.rfft(y.reshape(-1, 1024), axis=1)) ** 0.5).sum())
kept = rss_mb()
settle_freed_memory()
print(before, kept, rss_mb())
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc, /proc")
def test_a_process_that_lives_on_after_its_lane_gives_the_kept_memory_back():
    out = subprocess.run(
        [sys.executable, "-c", _SETTLE], capture_output=True, text=True, check=True, timeout=120
    )
    before, kept, settled = (int(x) for x in out.stdout.split())
    # Measured: 32 MB before, 123 MB kept after the tracks, 32 MB settled.
    assert kept - before > 40, (before, kept, settled)
    assert settled - before < 20, (before, kept, settled)


# A lane that limits its threads first and imports scipy's linear algebra afterwards (as the analysis stack
# does on first use): scipy's own OpenBLAS must run one thread too.
_LANE_THREADS = """
import torch
from threadpoolctl import threadpool_info
from retrieval.ingest_steps import single_threaded
torch.set_num_threads(2)
with single_threaded():
    import scipy.linalg
    blas = sorted({p["filepath"]: p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}.values())
    print(torch.get_num_threads(), blas)
print(torch.get_num_threads())
"""


def test_single_threaded_limits_torch_and_every_blas_then_gives_the_threads_back():
    out = subprocess.run(
        [sys.executable, "-c", _LANE_THREADS], capture_output=True, text=True, check=True, timeout=120
    ).stdout.split("\n")
    assert out[0] == "1 [1, 1]"  # torch, numpy's OpenBLAS and scipy's
    assert out[1] == "2"
