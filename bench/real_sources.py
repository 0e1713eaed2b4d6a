"""Real recordings grouped by source: one folder per source (a Debian package, an album).

``scripts/fetch_real_music.sh DIR`` fills ``DIR/<package>/`` from the allowed Debian packages.
A *source* is one such folder; its tracks share a production (composer, instruments, mixing),
which is what "sounds like" means in :mod:`bench.likeness`. Fret-on-Fire songs come as two
stems, ``*_guitar.ogg`` and ``*_song.ogg`` (the backing); their sum is the full mix, which is
the library track, and the stems are kept apart as cross-arrangement queries.

Files a decoder cannot read (tracker modules: .it, .s3m, .xm, .mod) are skipped and counted.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cadenza.errors import InputError
from encoder.corpus_real import STEM_SUFFIXES, check_not_reserved

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000


@dataclass
class Track:
    name: str  # "<source>/<file stem>"
    source: str
    artist: str  # tag when present, else the source
    audio: np.ndarray  # [n] float32 16 kHz (capped)
    seconds_full: float


@dataclass
class Sources:
    tracks: list[Track] = field(default_factory=list)
    # song name → (guitar stem, backing stem, index of its mix in ``tracks``)
    stems: dict[str, tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.tracks:
            out[t.source] = out.get(t.source, 0) + 1
        return out


def _artist(path: Path, source: str) -> str:
    from retrieval.metadata import read_tags

    try:
        tags = read_tags(path)
    except Exception:  # a tag reader failure must not lose the track: the source names it
        return source
    return str(tags.get("composer") or tags.get("artist") or source).strip() or source


def _decode(path: Path, max_seconds: float | None) -> tuple[np.ndarray, float] | None:
    import soundfile as sf

    from cadenza.audio import DecodeOptions, load_audio

    try:
        y = load_audio(path=path, options=DecodeOptions(sr=SAMPLE_RATE, duration_s=max_seconds))
    except InputError as exc:
        log.info("skipping %s: %s", path, exc)
        return None
    try:
        full = float(sf.info(str(path)).duration)
    except Exception:  # libsndfile cannot read it; the decoded length is a lower bound
        full = y.size / SAMPLE_RATE
    return y.astype(np.float32), full


def load_sources(
    root: Path, *, max_seconds: float | None, min_seconds: float = 25.0, only: tuple[str, ...] | None = None
) -> Sources:
    """Every source folder under ``root`` (or only those named in ``only``) → tracks (first
    ``max_seconds`` each; shorter than ``min_seconds`` skipped: two 10-s queries need room) and
    Fret-on-Fire stems."""
    folders = check_not_reserved(Path(root))
    if only is not None:
        folders = [p for p in folders if p.name in only]
    out = Sources()
    for folder in tqdm(folders, desc="sources", leave=False, mininterval=30):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        stems: dict[str, dict[str, Path]] = {}
        for p in files:
            stem = next((s for s in STEM_SUFFIXES if p.stem.endswith(s)), None)
            if stem is not None:
                stems.setdefault(p.stem[: -len(stem)], {})[stem] = p
                continue
            got = _decode(p, max_seconds)
            if got is None or got[0].size < min_seconds * SAMPLE_RATE:
                out.skipped.append(f"{folder.name}/{p.name}")
                continue
            out.tracks.append(Track(f"{folder.name}/{p.stem}", folder.name, _artist(p, folder.name), *got))
        for song, parts in sorted(stems.items()):
            if set(parts) != set(STEM_SUFFIXES):
                out.skipped.extend(f"{folder.name}/{p.name}" for p in parts.values())
                continue
            g, b = _decode(parts["_guitar"], max_seconds), _decode(parts["_song"], max_seconds)
            if g is None or b is None:
                out.skipped.append(f"{folder.name}/{song}")
                continue
            n = min(g[0].size, b[0].size)
            mix = g[0][:n] + b[0][:n]
            name = re.sub(r"^.*_songs_[^_]+_", "", song)  # the fetch script's flattened path prefix
            out.stems[f"{folder.name}/{name}"] = (g[0][:n], b[0][:n], len(out.tracks))
            out.tracks.append(
                Track(f"{folder.name}/{name}", folder.name, _artist(parts["_song"], folder.name), mix, g[1])
            )
    if len(out.counts()) < 2:
        raise InputError(
            f"need at least two source folders under {root}; run scripts/fetch_real_music.sh {root}"
        )
    return out
