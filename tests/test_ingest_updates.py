"""Re-ingesting known content (retrieval/ingest.py) and ``cadenza relink`` (retrieval/cli.py).

A moved file re-ingested at its new path gets that path (it used to stay "unchanged" at the old one
and the player failed); edited metadata updates the track and the CLI says "updated N"; a second copy
of a file leaves the track where it is; a moved library is repaired in one command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cadenza.synth_audio import random_chord_track, write_audio
from retrieval.ingest import ingest
from retrieval.metadata import metadata_changes


def _track(db) -> dict:
    with db.connection() as conn:
        rows = conn.execute("SELECT id, path, title, composer, era, year FROM tracks").fetchall()
    assert len(rows) == 1, rows
    return dict(zip(("id", "path", "title", "composer", "era", "year"), rows[0], strict=True))


def _sidecar(folder: Path, **fields) -> Path:
    path = folder / "metadata.json"
    path.write_text(json.dumps([{"path": "piece.wav", **fields}]))
    return path


@pytest.fixture(scope="module")
def embedder(settings):
    from assistant.app import load_embedder

    return load_embedder(settings)


def test_metadata_changes_only_from_what_is_stated_again():
    stored = {"title": "Aria", "composer": "J. S. Bach", "work": "", "era": "Baroque", "year": 1741}
    path = Path("/x/aria_take2.wav")
    assert metadata_changes(stored, tags={}, sidecar=None, path=path) == {}  # no file-name title
    assert metadata_changes(stored, tags={"title": "Aria"}, sidecar=None, path=path) == {}
    assert metadata_changes(stored, tags={"title": "Aria"}, sidecar={"composer": "Bach"}, path=path) == {
        "composer": "Bach"
    }
    assert metadata_changes(stored, tags={}, sidecar={"year": 1890}, path=path) == {
        "year": 1890,
        "era": "Romantic",
    }


def _ingest(db, embedder, paths: list[Path], *, metadata_file: Path | None = None):
    return ingest(
        db=db, paths=paths, embedder=embedder, workers=1, progress=False, metadata_file=metadata_file
    )


def test_a_moved_file_gets_its_new_path_and_edited_metadata_is_updated(db, tmp_path, embedder):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.mkdir()
    write_audio(a / "piece.wav", random_chord_track(seconds=20, seed=7, key=2))
    r = _ingest(db, embedder, [a], metadata_file=_sidecar(a, title="Old", composer="Alpha"))
    assert len(r.added) == 1
    first = _track(db)

    b.mkdir()
    shutil.move(a / "piece.wav", b / "piece.wav")
    r = _ingest(db, embedder, [b], metadata_file=_sidecar(b, title="New", composer="Beta", year=1890))
    assert r.updated == [first["id"]] and not r.added and not r.replaced and r.unchanged == 0
    assert r.to_json()["updated"] == 1
    now = _track(db)
    assert now["path"] == str((b / "piece.wav").resolve())
    assert (now["title"], now["composer"], now["year"], now["era"]) == ("New", "Beta", 1890, "Romantic")

    # Nothing new to say: unchanged. Without the sidecar: still unchanged (no file-name title).
    r = _ingest(db, embedder, [b], metadata_file=_sidecar(b, title="New", composer="Beta", year=1890))
    assert r.unchanged == 1 and not r.updated
    r = ingest(db=db, paths=[b / "piece.wav"], embedder=embedder, workers=1, progress=False)
    assert r.unchanged == 1 and not r.updated and _track(db)["title"] == "New"

    # A second copy elsewhere while the stored file is still there: the track stays where it is.
    c.mkdir()
    shutil.copy(b / "piece.wav", c / "piece.wav")
    r = ingest(db=db, paths=[c], embedder=embedder, workers=1, progress=False)
    assert r.unchanged == 1 and _track(db)["path"] == now["path"]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cadenza", "-q", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_says_updated_and_relink_repairs_a_moved_library(db, tmp_path, settings):
    env = {**os.environ, "CADENZA_HOME": str(settings.paths.home), "CADENZA_DATABASE_URL": db.url}
    old = tmp_path / "music"
    (old / "sub").mkdir(parents=True)
    write_audio(old / "piece.wav", random_chord_track(seconds=15, seed=11, key=4))
    write_audio(old / "sub" / "other.wav", random_chord_track(seconds=15, seed=12, key=9))
    done = _cli(["ingest", str(old), "--workers", "1"], env)
    assert done.returncode == 0 and "added 2" in done.stdout, done.stderr[-2000:]
    done = _cli(
        ["ingest", str(old), "--workers", "1", "--metadata", str(_sidecar(old, composer="Gamma"))], env
    )
    assert done.returncode == 0 and "updated 1" in done.stdout and "unchanged 1" in done.stdout, done.stdout

    new = tmp_path / "moved" / "music"
    new.parent.mkdir()
    shutil.move(old, new)
    (new / "sub" / "other.wav").unlink()  # one file did not make the move
    done = _cli(["relink", str(old), str(new)], env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "relinked 1 of 2" in done.stdout and "not found" in done.stdout and "other.wav" in done.stdout
    with db.connection() as conn:
        paths = sorted(r[0] for r in conn.execute("SELECT path FROM tracks").fetchall())
    assert paths == sorted([str(new.resolve() / "piece.wav"), str(old.resolve() / "sub" / "other.wav")])

    bad = _cli(["relink", str(tmp_path / "nowhere"), str(new)], env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "no track" in bad.stderr
