"""bench/proc_cpu.py: CPU seconds per process of a run's process tree, children started during it included."""

from __future__ import annotations

import subprocess
import sys

from bench.proc_cpu import role, timed

BURN = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.6: pass\n"


def test_a_child_started_during_the_run_is_counted_whole():
    def run() -> int:
        return subprocess.run([sys.executable, "-c", BURN], check=True).returncode

    rc, cpu = timed(run)
    assert rc == 0
    children = {k: v for k, v in cpu["by_role"].items() if k != "this process (driver)"}
    # The child's own 0.6 s of CPU (less at most one sampling interval at its end), not the parent's.
    assert sum(c["cpu_seconds"] for c in children.values()) >= 0.3
    assert cpu["total_cpu_seconds"] >= 0.3 and cpu["wall_seconds"] > 0


def test_roles_name_ray_actors_servers_and_pool_workers():
    assert (
        role("python", ["ray::MapWorker(MapBatches(_Embed))"], self_pid=1, pid=2)
        == "ray::MapWorker(MapBatches(_Embed))"
    )
    assert role("raylet", ["/x/raylet", "--node_ip_address=1"], self_pid=1, pid=2) == "ray raylet"
    assert role("postgres", ["postgres: pgserver postgres [local] COPY"], self_pid=1, pid=2) == "postgres"
    assert role("python", ["python", "-c", "from multiprocessing.spawn import spawn_main; spawn_main()"],
                self_pid=1, pid=2) == "pool worker"  # fmt: skip
    assert role("python", [], self_pid=7, pid=7) == "this process (driver)"
    # bench.ray_ingest's whole commands: the command's own process, told apart from its pool's workers.
    assert (
        role(
            "python3.11",
            ["/v/bin/python", "-m", "cadenza", "-q", "ingest", "/lib", "--ray"],
            self_pid=1,
            pid=2,
        )
        == "cadenza command (driver)"
    )


def test_a_child_s_largest_resident_size_is_kept():
    # The child holds 200 MB it has touched while the sampler reads it (every 0.25 s).
    hold = "import time\nb = bytearray(200 * 2**20)\nt = time.time()\nwhile time.time() - t < 0.8: pass\n"

    def run() -> int:
        return subprocess.run([sys.executable, "-c", hold], check=True).returncode

    _, cpu = timed(run)
    children = {k: v for k, v in cpu["by_role"].items() if k != "this process (driver)"}
    assert max(c["peak_rss_mb"] for c in children.values()) >= 200
    assert cpu["peak_rss_mb"] >= 200
