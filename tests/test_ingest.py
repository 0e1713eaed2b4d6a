"""Ingestion against the real database: idempotence, replacement, removal, reindex, kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cadenza.errors import NotFound
from cadenza.synth_audio import random_chord_track, write_audio, write_chord_tracks
from encoder.embed import Embedder, EmbedderSpec
from encoder.timbre import shipped_timbre
from retrieval.ingest import ingest, reindex
from retrieval.metadata import era_from_year, load_sidecar, merge
from retrieval.store import list_tracks, remove_track
from tests.helpers_db import truncate_all
from tests.helpers_ingest import check_complete, counts, expected_segments


@pytest.fixture(scope="module")
def embedder():
    return Embedder.untrained(seed=0)


@pytest.fixture
def music_dir(tmp_path) -> Path:
    lib = tmp_path / "lib"
    write_audio(lib / "a.ogg", random_chord_track(seconds=16, seed=1))
    write_audio(lib / "sub" / "b.flac", random_chord_track(seconds=12, seed=2, key=7))
    write_audio(lib / "c.wav", random_chord_track(seconds=7, seed=3, key=2))
    (lib / "notes.txt").write_text("not audio, not picked up")
    (lib / "meta.csv").write_text(
        "path,title,composer,work,year\na.ogg,Alpha,Bach,Suite,1720\nsub/b.flac,Beta,Mozart,Sonata,1785\n"
    )
    return lib


def test_ingest_is_idempotent_and_reads_metadata(db, music_dir, embedder):
    r = ingest(
        db=db,
        paths=[music_dir],
        embedder=embedder,
        metadata_file=music_dir / "meta.csv",
        workers=1,
        progress=False,
    )
    assert len(r.added) == 3 and not r.failed
    n_tracks, n_segs, n_chroma = counts(db)
    assert (n_tracks, n_chroma) == (3, 3)
    assert n_segs == expected_segments(16) + expected_segments(12) + expected_segments(7)
    tracks = {Path(t.path).name: t for t in list_tracks_of(db)}
    assert (
        tracks["a.ogg"].composer == "Bach"
        and tracks["a.ogg"].era == "Baroque"
        and tracks["a.ogg"].title == "Alpha"
    )
    assert tracks["b.flac"].era == "Classical" and tracks["b.flac"].work == "Sonata"
    assert tracks["c.wav"].title == "c" and tracks["c.wav"].composer == ""
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT s.start_s, s.end_s, t.duration_s, s.model_version, array_length(s.chroma_mean, 1), s.key_index"
            " FROM segments s JOIN tracks t ON t.id = s.track_id"
        ).fetchall()
        chroma = conn.execute("SELECT n_frames, length(chroma) FROM track_chroma").fetchall()
    for start, end, dur, version, n12, key in rows:
        assert 0 <= start < end <= dur + 0.11 and end - start >= 5 - 1e-3
        assert version == embedder.model_version and n12 == 12 and 0 <= key < 12
    assert all(nbytes == n * 12 * 2 for n, nbytes in chroma)

    again = ingest(db=db, paths=[music_dir], embedder=embedder, workers=1, progress=False)
    assert again.added == [] and again.unchanged == 3
    assert counts(db) == (n_tracks, n_segs, n_chroma)


def list_tracks_of(db):
    with db.connection() as conn:
        return list_tracks(conn)


def test_changed_file_replaces_its_track(db, music_dir, embedder):
    ingest(db=db, paths=[music_dir], embedder=embedder, workers=1, progress=False)
    before = {Path(t.path).name: t for t in list_tracks_of(db)}
    write_audio(music_dir / "a.ogg", random_chord_track(seconds=22, seed=9))
    r = ingest(db=db, paths=[music_dir], embedder=embedder, workers=1, progress=False)
    assert len(r.replaced) == 1 and r.unchanged == 2 and not r.added
    after = {Path(t.path).name: t for t in list_tracks_of(db)}
    assert after["a.ogg"].id != before["a.ogg"].id
    assert after["a.ogg"].n_segments == expected_segments(22)
    assert len(after) == 3 and after["c.wav"].id == before["c.wav"].id


def test_remove_cascades(db, music_dir, embedder):
    ingest(db=db, paths=[music_dir], embedder=embedder, workers=1, progress=False)
    victim = list_tracks_of(db)[0]
    with db.connection() as conn:
        conn.execute("INSERT INTO plays (listener_id, track_id) VALUES ('me', %s)", (victim.id,))
        conn.commit()
        remove_track(conn, victim.id)
        left = conn.execute("SELECT count(*) FROM segments WHERE track_id = %s", (victim.id,)).fetchone()[0]
        plays = conn.execute("SELECT count(*) FROM plays").fetchone()[0]
        with pytest.raises(NotFound):
            remove_track(conn, victim.id)
    assert left == 0 and plays == 0 and counts(db)[0] == 2


def test_reindex_reembeds_other_versions(db, music_dir, embedder):
    ingest(db=db, paths=[music_dir], embedder=embedder, workers=1, progress=False)
    ids = sorted(t.id for t in list_tracks_of(db))
    other = Embedder.untrained(seed=1)
    r = reindex(db=db, embedder=other, workers=1, progress=False)
    assert sorted(r.replaced) == ids
    with db.connection() as conn:
        versions = {v for (v,) in conn.execute("SELECT DISTINCT model_version FROM segments").fetchall()}
    assert versions == {other.model_version}
    assert sorted(t.id for t in list_tracks_of(db)) == ids
    assert reindex(db=db, embedder=other, workers=1, progress=False).replaced == []


def test_sidecar_json_and_eras(tmp_path):
    (tmp_path / "m.json").write_text(
        json.dumps([{"path": "x.mp3", "composer": "Landini", "year": "c. 1370"}])
    )
    side = load_sidecar(tmp_path / "m.json")
    meta = merge(tags={"title": "Tagged", "composer": "Tag"}, sidecar=side[(tmp_path / "x.mp3").resolve()],
                 path=tmp_path / "x.mp3")  # fmt: skip
    assert meta["composer"] == "Landini" and meta["title"] == "Tagged" and meta["era"] == "Medieval"
    assert [era_from_year(y) for y in (1399, 1400, 1599, 1600, 1749, 1750, 1819, 1820, 1899, 1900, 1974, 1975)] == [
        "Medieval", "Renaissance", "Renaissance", "Baroque", "Baroque", "Classical", "Classical", "Romantic",
        "Romantic", "Modern", "Modern", "Contemporary",
    ]  # fmt: skip


def test_tags_are_read_and_the_sidecar_wins(tmp_path):
    from mutagen.flac import FLAC

    from retrieval.metadata import read_tags

    path = write_audio(tmp_path / "tagged.flac", random_chord_track(seconds=6, seed=4))
    f = FLAC(str(path))
    f["title"], f["artist"], f["album"], f["date"], f["genre"] = (
        "Air",
        "Someone",
        "Suite No. 3",
        "1731",
        "Baroque",
    )
    f.save()
    tags = read_tags(path)
    assert tags["title"] == "Air" and tags["composer"] == "Someone" and tags["year"] == 1731
    meta = merge(tags=tags, sidecar={"composer": "J. S. Bach"}, path=path)
    assert meta["composer"] == "J. S. Bach" and meta["work"] == "Suite No. 3" and meta["era"] == "Baroque"
    assert read_tags(tmp_path / "missing.flac") == {}


def test_kill_and_resume_leaves_no_partial_track(db, tmp_path, settings):
    lib = tmp_path / "many"
    n_files = 6
    write_chord_tracks(lib, n_files, seconds=30, seed=100)
    env = {**os.environ, "CADENZA_HOME": str(settings.paths.home), "CADENZA_DATABASE_URL": db.url}
    cmd = [sys.executable, "-m", "cadenza", "-q", "ingest", str(lib), "--workers", "1", "--json"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if counts(db)[0] >= 2:
                break
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    mid = counts(db)[0]
    assert 1 <= mid <= n_files
    check_complete(db)
    # The resumed run uses the process pool (spawned workers rebuild the embedder; the parent writes).
    resume = [*cmd[:-3], "--workers", "2", "--json"]
    done = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["added"] + report["unchanged"] == n_files
    assert counts(db)[0] == n_files
    check_complete(db)
    # The library and remove commands on the same database.
    base = [sys.executable, "-m", "cadenza", "-q"]
    listed = subprocess.run(
        [*base, "library", "--json"], env=env, capture_output=True, text=True, timeout=120
    )
    tracks = json.loads(listed.stdout)
    assert len(tracks) == n_files and all(t["n_segments"] == expected_segments(30) for t in tracks)
    # A track embedded by an older checkpoint: `library` says so, `reindex` re-embeds just that one.
    with db.connection() as conn:
        conn.execute(
            "UPDATE segments SET model_version = 'cadenza-v0-old' WHERE track_id = %s", (tracks[1]["id"],)
        )
        conn.commit()
    text = subprocess.run([*base, "library"], env=env, capture_output=True, text=True, timeout=120).stdout
    assert "1 track was embedded by another model" in text and "cadenza reindex" in text
    redo = subprocess.run([*base, "reindex"], env=env, capture_output=True, text=True, timeout=300)
    assert redo.returncode == 0, redo.stderr[-2000:]
    text = subprocess.run([*base, "library"], env=env, capture_output=True, text=True, timeout=120).stdout
    assert "cadenza reindex" not in text and f"{n_files} tracks" in text
    gone = subprocess.run(
        [*base, "remove", str(tracks[0]["id"])], env=env, capture_output=True, text=True, timeout=120
    )
    assert gone.returncode == 0 and counts(db)[0] == n_files - 1
    again = subprocess.run(
        [*base, "remove", str(tracks[0]["id"])], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 2 and "no track with id" in again.stderr and again.stderr.count("\n") == 1


def test_leveling_and_denoise():
    import pyloudnorm

    from cadenza.synth_audio import SR, noise
    from retrieval.analysis import denoise, level_loudness

    meter = pyloudnorm.Meter(SR)
    quiet = 0.05 * random_chord_track(seconds=8, seed=7)
    leveled = level_loudness(y=quiet)
    assert abs(meter.integrated_loudness(leveled.astype(np.float64)) + 23.0) < 0.5
    # A near-silent file is raised by at most 30 dB, never blown up to full loudness.
    faint = 0.004 * random_chord_track(seconds=8, seed=7)  # ≈ −67 LUFS
    gain = meter.integrated_loudness(level_loudness(y=faint).astype(np.float64)) - meter.integrated_loudness(
        faint.astype(np.float64)
    )
    assert 28.0 < gain < 30.5  # ~30 dB (gating near −70 LUFS blurs the measurement by ~1 dB)
    assert meter.integrated_loudness(level_loudness(y=faint).astype(np.float64)) < -33.0
    silent = np.zeros(SR * 3, np.float32)
    assert not level_loudness(y=silent).any()  # no gain applied to silence
    assert np.abs(level_loudness(y=random_chord_track(seconds=5, seed=8))).max() <= 1.0
    clean = np.concatenate([np.zeros(2 * SR, np.float32), random_chord_track(seconds=6, seed=3)])
    noisy = clean + noise(seconds=8, amp=0.02)
    out = denoise(y=noisy)
    assert out.shape == noisy.shape
    hiss_before, hiss_after = np.mean(noisy[: 2 * SR] ** 2), np.mean(out[: 2 * SR] ** 2)
    assert hiss_after < 0.1 * hiss_before  # the noise-only lead lost > 10 dB
    assert np.mean(out[2 * SR :] ** 2) > 0.4 * np.mean(clean[2 * SR :] ** 2)  # the music mostly survived


def stored(db) -> dict[tuple[str, float], tuple]:
    with db.connection() as conn:
        rows = conn.execute(
            "SELECT t.path, s.start_s, s.embedding, s.key_index, s.mode, s.tempo_bpm, s.loudness_db, s.chroma_seq"
            " FROM segments s JOIN tracks t ON t.id = s.track_id"
        ).fetchall()
    return {(r[0], round(float(r[1]), 2)): (r[2].to_numpy(), *r[3:7], bytes(r[7])) for r in rows}


def test_two_lanes_store_the_same_segments_as_one(db, tmp_path):
    lib = tmp_path / "lib"
    for i, secs in enumerate((31, 9, 22, 14, 18)):
        write_audio(lib / f"t{i}.flac", random_chord_track(seconds=secs, seed=60 + i, key=(5 * i) % 12))
    emb = Embedder.untrained(seed=0)
    one = ingest(db=db, paths=[lib], embedder=emb, workers=1, progress=False, calibrate_after=False)
    want = stored(db)
    truncate_all(db)
    torch.set_num_threads(2)
    two = ingest(
        db=db,
        paths=[lib],
        embedder=emb,
        spec=EmbedderSpec(untrained_seed=0),
        workers=2,
        progress=False,
        calibrate_after=False,
    )
    assert torch.get_num_threads() == 2  # the caller's setting is given back
    got = stored(db)
    assert len(two.added) == len(one.added) == 5 and not two.failed
    assert two.segments == one.segments == len(want) and set(got) == set(want)
    for key, (e, *rest) in want.items():
        g, *grest = got[key]
        assert np.abs(g - e).max() < 1e-5, key
        assert grest == rest, key


def test_reindex_fills_the_timbre_of_a_library_stored_before_it(db, music_dir, embedder):
    """A library ingested before migration 008 (no timbre vectors, no timbre version): reindex measures them."""
    ingest(db=db, paths=[music_dir], embedder=embedder, workers=1, progress=False)
    check_complete(db)
    with db.connection() as conn:
        before = conn.execute("SELECT id, timbre FROM segments ORDER BY id LIMIT 1").fetchone()[1].to_numpy()
        conn.execute("UPDATE segments SET timbre = NULL")
        conn.execute("UPDATE tracks SET timbre_version = NULL, timbre = NULL")
        conn.commit()
    r = reindex(db=db, embedder=embedder, workers=1, progress=False)
    assert len(r.replaced) == len(list_tracks_of(db))
    check_complete(db)
    with db.connection() as conn:
        after = conn.execute("SELECT id, timbre FROM segments ORDER BY start_s, track_id LIMIT 1").fetchone()[
            1
        ]
        versions = {v for (v,) in conn.execute("SELECT DISTINCT timbre_version FROM tracks").fetchall()}
    assert versions == {shipped_timbre().version}
    assert (
        abs(float(np.linalg.norm(after.to_numpy())) - 1.0) < 1e-4 and before.shape == after.to_numpy().shape
    )
    assert reindex(db=db, embedder=embedder, workers=1, progress=False).replaced == []


# `cadenza ingest --workers 1`'s own code in a fresh process (thread settings are process-wide), with the analysis
# step watched: the torch threads each file sees, and the process's threads afterwards.
_ONE_LANE_CLI = """
import sys, torch
import retrieval.ingest_pool as ingest_pool
from cadenza.cli import main
seen, real = [], ingest_pool.process_file
def watched(**kw):
    seen.append(torch.get_num_threads())
    return real(**kw)
ingest_pool.process_file = watched
torch.set_num_threads(2)
rc = main(["-q", "ingest", sys.argv[1], "--workers", "1", "--json"])
print("SEEN", rc, seen, torch.get_num_threads())
"""


def test_cli_one_lane_ingest_runs_on_one_thread_and_gives_the_threads_back(db, music_dir, settings):
    """``cadenza ingest --workers 1`` analyses in its own process: on one core, as each pool lane does (torch's
    own pool took every core for little speed: 3.5x the CPU seconds on a loaded 2-core machine)."""
    env = {**os.environ, "CADENZA_HOME": str(settings.paths.home), "CADENZA_DATABASE_URL": db.url}
    out = subprocess.run(
        [sys.executable, "-c", _ONE_LANE_CLI, str(music_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = [x for x in out.stdout.splitlines() if x.startswith("SEEN")]
    assert line == ["SEEN 0 [1, 1, 1] 2"], out.stdout[-2000:] + out.stderr[-2000:]


def test_reindex_fills_harmony_from_the_stored_chroma_and_the_phone_band_by_decoding(db, music_dir, embedder):
    """A library stored before migration 009: harmony vectors come from the stored chroma with no track
    re-embedded; a track without its phone band's chroma is decoded again. Both end as a fresh ingest stores them."""
    from tests.helpers_ingest import assert_same_rows, stored_rows

    ingest(db=db, paths=[music_dir], embedder=embedder, workers=1, progress=False)
    want = stored_rows(db)
    with db.connection() as conn:
        n_segments = conn.execute("SELECT count(*) FROM segments").fetchone()[0]
        conn.execute("UPDATE segments SET harmony = NULL")
        conn.commit()
    r = reindex(db=db, embedder=embedder, workers=1, progress=False)
    assert r.harmony_filled == n_segments and r.replaced == []
    assert_same_rows(stored_rows(db), want)
    with db.connection() as conn:
        conn.execute("UPDATE track_chroma SET band_chroma = NULL")
        conn.commit()
    r = reindex(db=db, embedder=embedder, workers=1, progress=False)
    assert len(r.replaced) == len(list_tracks_of(db)) and r.harmony_filled == 0
    assert_same_rows(stored_rows(db), want)
    check_complete(db)
