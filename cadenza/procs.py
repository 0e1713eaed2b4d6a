"""Child processes that do not outlive their parent.

``die_with_parent()`` is the first thing a worker process does (ingest pool initializer): on Linux it
asks the kernel (``prctl(PR_SET_PDEATHSIG)``) to SIGKILL it when the process that started it dies,
so a ``kill -9`` of ``cadenza ingest`` cannot leave a worker blocked forever on a pipe nobody reads.
The kernel sends the signal when the parent *thread* that forked it ends, which is the main thread for
the ProcessPoolExecutor as Cadenza uses it (workers start in ``submit`` on the caller's thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

#: From <linux/prctl.h>.
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies. True when armed.

    ``parent_pid`` is the parent as the caller knows it: if it already died before the signal was
    armed (the worker was still importing), this process exits at once rather than linger.
    """
    if not sys.platform.startswith("linux"):
        return False  # no prctl: the pool's own pipe checks still end idle workers
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # orphaned before the signal was armed
    return True
