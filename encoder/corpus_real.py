"""Real recordings as a corpus source (``cadenza corpus build --real DIR``).

``DIR`` holds one folder per *source* (a Debian package, an album; ``scripts/fetch_real_music.sh``
fills it). A source's tracks share a production — composer, instruments, mixing — which is what
listeners mean by "sounds like", so the source is the style label::

    work_id   "real/<source>/<file stem>"      one track = one work
    composer  "<source>"                       so the composer-level loss term = same source
    artist    the file's composer/artist tag, else the source

and the three levels of the multi-positive losses read: moment (views of the same passage),
piece (other passages of the same track), style (other tracks of the same source).

Splits are by WHOLE source: the sources in :data:`HELDOUT_SOURCES` are never featurized into
the corpus (``bench.likeness`` measures on them alone); every other source is ``train``.

Views of a track are the clean recording and audio-domain degradations of it (noise, EQ, MP3,
reverb, a phone line); pitch and tempo changes and 3–10-s crops come fresh at training time
(:mod:`encoder.feataug`, :class:`encoder.data.BatchSpec`). A Fret-on-Fire song (``*_guitar`` +
``*_song`` stems) is one track, the sum of its stems, with each stem alone as a ``stem`` view:
a real other arrangement of the same passage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cadenza.audio import DecodeOptions, load_audio
from cadenza.errors import InputError
from encoder import augment
from encoder.corpus_records import WorkResult, dataset_name
from encoder.data import REAL_PREFIX
from encoder.features import SAMPLE_RATE, acoustic_features
from encoder.render import stable_hash

log = logging.getLogger(__name__)

#: Never used for anything: kept for an independent acceptance evaluation (MODEL_CARD.md).
RESERVED = (
    "wesnoth",
    "hyperrogue-music",
    "warzone2100-music",
    "fb-music-high",
    "drascula-music",
    "asc-music",
    "nexuiz-music",
    "singularity-music",
)
#: Sources kept out of training whole, for the likeness benchmark: both Fret-on-Fire packs (the
#: cross-stem test), the multi-composer widelands set, and three smaller ones. pingus-data is
#: tracker modules only (nothing decodes), so it is listed but gives no tracks.
HELDOUT_SOURCES = (
    "fretsonfire-songs-muldjord",
    "fretsonfire-songs-sectoid",
    "widelands-data",
    "openclonk-data",
    "xmoto-data",
    "lincity-ng-data",
    "pingus-data",
)
#: A song stored as two stems: ``<song>_guitar.<ext>`` and ``<song>_song.<ext>`` (the backing).
STEM_SUFFIXES = ("_guitar", "_song")
#: Audio-domain views of every track (the ``view`` attribute), besides ``clean``.
AUDIO_VIEWS = ("noise", "eq", "mp3", "reverb", "phone")
#: Default cap on the seconds used of each track: game tracks loop, and 4 min holds the material.
DEFAULT_MAX_SECONDS = 240.0
#: Tracks shorter than this are left out: a passage sampler needs room for several windows.
MIN_SECONDS = 20.0


@dataclass(frozen=True)
class RealTrack:
    work_id: str
    composer: str  # the source folder: the style label
    files: tuple[tuple[str, Path], ...]  # (part, path): ("full", p) or ("_guitar", p), ("_song", p)


def is_heldout(source: str) -> bool:
    return source in HELDOUT_SOURCES


def check_not_reserved(root: Path) -> list[Path]:
    """The source folders under ``root``; an InputError when one of them is reserved."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; fill one with scripts/fetch_real_music.sh DIR")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    bad = [p.name for p in folders if any(p.name.startswith(r) for r in RESERVED)]
    if bad:
        raise InputError(
            f"{bad} are reserved for the independent acceptance evaluation; remove them from {root}"
        )
    return folders


def list_tracks(root: Path, *, heldout: tuple[str, ...] = HELDOUT_SOURCES) -> list[RealTrack]:
    """The training tracks under ``root`` (one folder per source; ``heldout`` sources left out)."""
    out: list[RealTrack] = []
    for folder in check_not_reserved(root):
        if folder.name in heldout:
            log.info("held out of training: %s", folder.name)
            continue
        stems: dict[str, dict[str, Path]] = {}
        for p in sorted(q for q in folder.iterdir() if q.is_file()):
            part = next((s for s in STEM_SUFFIXES if p.stem.endswith(s)), None)
            if part is None:
                out.append(RealTrack(f"{REAL_PREFIX}{folder.name}/{p.stem}", folder.name, (("full", p),)))
            else:
                stems.setdefault(p.stem[: -len(part)], {})[part] = p
        for song, parts in sorted(stems.items()):
            if set(parts) == set(STEM_SUFFIXES):
                out.append(
                    RealTrack(f"{REAL_PREFIX}{folder.name}/{song}", folder.name, tuple(sorted(parts.items())))
                )
            else:  # a lone stem is an ordinary recording
                out.extend(
                    RealTrack(f"{REAL_PREFIX}{folder.name}/{p.stem}", folder.name, (("full", p),))
                    for p in parts.values()
                )
    if not out:
        raise InputError(f"no training tracks under {root}: every source folder is held out or empty")
    return out


def view_names(track: RealTrack) -> list[str]:
    names = ["clean", *AUDIO_VIEWS]
    if len(track.files) > 1:
        names += [f"stem{part}" for part, _ in track.files]
    return names


def wanted(track: RealTrack, present: set[str]) -> frozenset[str] | None:
    """The track's views already stored (to skip), or None when all are."""

    names = {dataset_name(work_id=track.work_id, view_name=v) for v in view_names(track)}
    return None if names <= present else frozenset(names & present)


def _artist(path: Path, source: str) -> str:
    try:
        import mutagen

        f = mutagen.File(str(path), easy=True)
        tags = dict(f.tags or {}) if f is not None else {}
    except Exception:  # mutagen raises many types for odd files; the source names the track then
        return source
    for key in ("composer", "artist", "albumartist"):
        value = tags.get(key)
        if value:
            return str(value[0] if isinstance(value, list) else value).strip() or source
    return source


def degrade(*, y: np.ndarray, view: str, rng: np.random.Generator) -> np.ndarray:
    """``y`` as the audio view ``view`` (:data:`AUDIO_VIEWS`) hears it; same length."""
    if view == "noise":
        return augment.add_noise(y=y, rng=rng)
    if view == "eq":
        return augment.random_eq(y=y, rng=rng)
    if view == "mp3":
        return augment.mp3_roundtrip(y=y, rng=rng)
    if view == "reverb":
        return augment.reverb(y=y, rng=rng)
    if view == "phone":
        return augment.phone_band(y=y)
    raise InputError(f"unknown audio view {view!r}; expected one of {AUDIO_VIEWS}")


def process_track(*, track: RealTrack, max_seconds: float | None, skip: frozenset[str]):
    """Decode and featurize the views of ``track`` not in ``skip`` (worker side; never raises)."""
    cap = DEFAULT_MAX_SECONDS if max_seconds is None else max_seconds
    result = WorkResult(track.work_id, track.composer)
    try:
        parts = {
            part: load_audio(path=p, options=DecodeOptions(sr=SAMPLE_RATE, duration_s=cap))
            for part, p in track.files
        }
        n = min(y.size for y in parts.values())
        if n < MIN_SECONDS * SAMPLE_RATE:
            raise InputError(f"{track.work_id} is {n / SAMPLE_RATE:.1f} s; under {MIN_SECONDS:.0f} s")
        clean = np.sum([y[:n] for y in parts.values()], axis=0).astype(np.float32)
        if len(parts) > 1:  # the stems' sum can clip
            clean /= max(1.0, float(np.max(np.abs(clean))) / 0.99)
        result.clean_seconds = n / SAMPLE_RATE
        artist = _artist(track.files[-1][1], track.composer)
        # whole sources: a training source is all train (no per-track val/test of a source)
        split = "heldout" if is_heldout(track.composer) else "train"
        for view in view_names(track):
            name = dataset_name(work_id=track.work_id, view_name=view)
            if name in skip:
                continue
            rng = np.random.default_rng(stable_hash(f"aug:{track.work_id}:{view}"))
            if view == "clean":
                audio = clean
            elif view.startswith("stem"):
                audio = parts[view[4:]][:n]
            else:
                audio = degrade(y=clean, view=view, rng=rng)
            attrs = {
                "work_id": track.work_id,
                "composer": track.composer,
                "split": split,
                "view": "stem" if view.startswith("stem") else view,
                "program": -1,
                "instrument": "recording",
                "transpose": 0,
                "time_scale": 1.0,
                "artist": artist,
                "duration_s": float(n / SAMPLE_RATE),
            }
            frames = acoustic_features(y=audio, sr=SAMPLE_RATE).astype(np.float16)
            result.views.append((name, frames, attrs))
    except Exception as exc:  # skip-and-log: one bad file must not stop a long build
        result.error = f"{type(exc).__name__}: {exc}"
    return result
