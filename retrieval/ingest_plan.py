"""Which files an ingest run must analyse: the folder scan and the plan against the database.

Idempotent by content hash: an already stored hash is never decoded again; known content whose
file moved or whose tags changed is updated in place; a changed file at a known path is planned
to replace its old track. Shared by the process pool (retrieval/ingest.py) and Ray
(retrieval/ray_ingest.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from cadenza.audio import AUDIO_EXTENSIONS, content_hash
from cadenza.errors import InputError
from retrieval.metadata import metadata_changes, read_tags
from retrieval.store import update_track

INGEST_EXTENSIONS = frozenset({".mp3", ".wav", ".flac", ".ogg", ".opus", ".m4a", ".aac"})
assert INGEST_EXTENSIONS <= AUDIO_EXTENSIONS


def find_audio_files(paths: Iterable[Path]) -> list[Path]:
    """Files as given, folders searched recursively for audio extensions; sorted, de-duplicated."""
    out: list[Path] = []
    for p in paths:
        p = Path(p).expanduser()
        if p.is_dir():
            out.extend(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in INGEST_EXTENSIONS)
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"{p} does not exist; give audio files or folders")
    return sorted({f.resolve() for f in out})


@dataclass
class IngestPlan:
    """What a run must analyze: new or changed files, the old tracks a changed file replaces."""

    jobs: list[tuple[Path, str]] = field(default_factory=list)
    replace: dict[Path, list[int]] = field(default_factory=dict)
    unchanged: int = 0
    #: Known content whose path (a moved file) or metadata was updated while planning.
    updated: list[int] = field(default_factory=list)


def known_changes(known: tuple[Any, ...], *, path: Path, sidecar: dict[str, Any] | None) -> dict[str, Any]:
    """What to change on a stored track (``id, path, title, composer, work, era, year``) that has the
    content of ``path``: its path when the stored file is gone (moved; a second copy leaves it), and
    the metadata fields this file's tags and sidecar row state differently."""
    _, old_path, title, composer, work, era, year = known
    stored = {"title": title, "composer": composer, "work": work, "era": era, "year": year}
    changes = metadata_changes(stored, tags=read_tags(path), sidecar=sidecar, path=path)
    if str(path) != old_path and not Path(old_path).exists():
        changes["path"] = str(path)
    return changes


def plan_ingest(
    conn: psycopg.Connection, files: Sequence[Path], sidecar: dict[Path, dict[str, Any]] | None = None
) -> IngestPlan:
    """Hash every file; an already stored hash is not decoded again.

    Known content is "unchanged", or "updated" when the file moved (its new path is stored) or its
    tags or ``sidecar`` row say something else than the stored metadata (a re-ingest used to keep the
    old path, and the player failed).
    """
    plan = IngestPlan()
    for f in files:
        digest = content_hash(f)
        known = conn.execute(
            "SELECT id, path, title, composer, work, era, year FROM tracks WHERE content_hash = %s", (digest,)
        ).fetchone()
        if known:
            changes = known_changes(known, path=f, sidecar=(sidecar or {}).get(f.resolve()))
            if changes:
                update_track(conn, int(known[0]), changes)
                plan.updated.append(int(known[0]))
            else:
                plan.unchanged += 1
            continue
        old = [r[0] for r in conn.execute("SELECT id FROM tracks WHERE path = %s", (str(f),)).fetchall()]
        if old:
            plan.replace[f] = old
        plan.jobs.append((f, digest))
    return plan
