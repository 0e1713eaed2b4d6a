"""Ingestion on Ray (retrieval/ray_ingest.py) against the real database and a real local Ray.

It must store exactly what the built-in pool stores, keep the content-hash idempotency, and
leave no partial track, duplicate or stray process when killed mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cadenza.synth_audio import random_chord_track, write_audio, write_chord_tracks
from encoder.embed import Embedder, EmbedderSpec
from retrieval.ingest import ingest
from tests.helpers_db import truncate_all
from tests.helpers_ingest import assert_same_rows, check_complete, counts, stored_rows

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'cadenza[ray]')")

pytestmark = pytest.mark.slow


def test_ray_stores_what_the_pool_stores(db, tmp_path):
    from retrieval.ray_ingest import ray_ingest

    lib = tmp_path / "lib"
    for i, secs in enumerate((24, 9, 16, 4)):  # the 4-s file is too short: failed on both paths
        write_audio(lib / f"t{i}.flac", random_chord_track(seconds=secs, seed=80 + i, key=(5 * i) % 12))
    (lib / "meta.csv").write_text(
        "path,title,composer,year\nt0.flac,Alpha,Bach,1720\nt2.flac,Gamma,Haydn,1790\n"
    )
    kw = {
        "db": db,
        "paths": [lib],
        "metadata_file": lib / "meta.csv",
        "progress": False,
        "calibrate_after": False,
    }
    pool = ingest(embedder=Embedder.untrained(seed=0), workers=1, **kw)
    want = stored_rows(db)
    truncate_all(db)
    spec = EmbedderSpec(untrained_seed=0)
    # A local Ray's writer (the driver), then a cluster's (writer actors); write_batch 2: batching across
    # tracks is exercised.
    for layout in ({}, {"writers": 2}):
        truncate_all(db)
        ray = ray_ingest(spec=spec, model_version="untrained-seed0", workers=2, write_batch=2, **layout, **kw)
        assert len(ray.added) == len(pool.added) == 3 and ray.segments == pool.segments
        assert [Path(p).name for p, _ in ray.failed] == ["t3.flac"] and "shorter than 5 s" in ray.failed[0][1]
        assert_same_rows(stored_rows(db), want)
        check_complete(db)
        times = ray.to_json()["ray"]
        assert set(times["stage_seconds"]) == {"featurize", "embed", "write"}
        assert sum(w["tracks"] for k, w in times["workers"].items() if k.startswith("embed:")) == 4
        # The timeline runs in order: Ray up, an actor warm, files embedded, written, the run over.
        tl = times["timeline"]
        assert 0 < tl["ray_init_done"] < tl["actor_1_warm"] < tl["first_embed_done"] <= tl["last_write_done"]
        assert (
            tl["last_write_done"]
            <= tl["pipeline_done"]
            <= tl["finish_done"]
            <= tl["end"]
            <= ray.wall_seconds + 0.05
        )
        pids = {
            stage: {k.split(":")[1] for k in times["workers"] if k.startswith(stage)}
            for stage in ("featurize", "embed")
        }
        assert (
            pids["featurize"] == pids["embed"]
        )  # on CPUs a file is featurized where it is embedded, either way

    # Idempotent by content hash; a changed file replaces its track; a copy under another name is one track.
    write_audio(lib / "t1.flac", random_chord_track(seconds=11, seed=99, key=3))
    (lib / "copy.flac").write_bytes((lib / "t2.flac").read_bytes())
    # On a 1-CPU Ray: the actor and the featurize tasks must share the CPU, not wait for each other.
    again = ray_ingest(spec=spec, model_version="untrained-seed0", num_cpus=1, **kw)
    assert len(again.replaced) == 1 and not again.added and again.unchanged == 3
    assert counts(db)[0] == 3
    check_complete(db)


def test_ray_refuses_another_model(db, tmp_path):
    from cadenza.errors import ConfigError
    from retrieval.ray_ingest import ray_ingest

    write_audio(tmp_path / "a.flac", random_chord_track(seconds=12, seed=7))
    with pytest.raises(ConfigError, match="embedded with model untrained-seed1"):
        ray_ingest(
            db=db, paths=[tmp_path], spec=EmbedderSpec(untrained_seed=1), model_version="untrained-seed0",
            progress=False,
        )  # fmt: skip
    assert counts(db) == (0, 0, 0)


def _session_processes(sid: int) -> list[str]:
    """Command lines of live (not zombie) processes in session ``sid``."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session
            out.append(text[: text.rindex(")") + 1])
    return out


def test_kill_mid_run_then_rerun_leaves_no_partial_track(db, tmp_path, settings):
    lib = tmp_path / "many"
    n_files = 10
    write_chord_tracks(lib, n_files, seconds=24, seed=300)
    env = {**os.environ, "CADENZA_HOME": str(settings.paths.home), "CADENZA_DATABASE_URL": db.url}
    cmd = [sys.executable, "-m", "cadenza", "-q", "ingest", str(lib), "--ray", "--json"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None and counts(db)[0] == 0:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Ray's own processes (GCS, raylet, workers) go with the killed driver; a writer may
    # still commit its batch while it goes, so count what is stored once they are all gone.
    deadline = time.monotonic() + 30
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _session_processes(proc.pid) == []
    mid = counts(db)[0]
    assert 1 <= mid <= n_files, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    check_complete(db)
    # The rerun also lists its imports: the driver plans and writes, Ray's actors embed, so the command itself
    # must not pay for torch (~1.5 s of a fresh process).
    done = subprocess.run(
        cmd, env={**env, "PYTHONPROFILEIMPORTTIME": "1"}, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = [
        line.rsplit("|", 1)[-1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    ]
    assert "numpy" in imported  # the listing works
    assert "torch" not in imported
    report = json.loads(done.stdout)
    assert report["unchanged"] == mid and report["added"] == n_files - mid
    assert counts(db)[0] == n_files
    check_complete(db)
