"""The melody route: a single-voice query (hum, whistle, sung line, one instrument) searched by its tune.

A recording is searched by how it sounds (the encoder); a hummed tune shares nothing with the
library's sound but its intervals, and rarely its key or tempo. So:

1. :func:`sung_query` tracks the query's pitch (PESTO, :mod:`encoder.pitch`) and measures
   whether it is ONE voice: the share of the spectrum's energy (up to its 8th harmonic) that
   lies on the harmonics of the tracked pitch. A hum, a whistle or a solo line puts almost all
   of it there; several instruments put much of it elsewhere.
2. :func:`search_melody` joins the stored window contours (``segments.melody``,
   :mod:`retrieval.melody`) back into one line per track and slides the whole hum over them with
   :func:`retrieval.melody_match.match_lines` — key- and octave-invariant, tempo ×0.8–×1.25 — and
   answers the best passage per track (the window holding its start), with the transposition and
   tempo it matched at.

The matcher scans the filtered lines in numpy, linear in the library's length (measured in
bench/results/humming.md, "Cost"): fine for the libraries this app holds (tens of thousands of
windows); a million-window library would need an index over contour shingles first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from cadenza.db import scalar
from encoder.features import N_FFT, SAMPLE_RATE, stft_magnitude
from encoder.pitch import track_pitch
from retrieval.analysis import prepare
from retrieval.descriptors import KEY_NAMES
from retrieval.likeness import likeness
from retrieval.melody import MELODY_FPS, melody_voices
from retrieval.melody_match import MIN_VOICED_FRAMES, LineMatch, join_windows, match_lines
from retrieval.types import Result

#: A query whose tracked pitch holds at least this share of its harmonic energy is one voice.
SINGLE_VOICE_MIN_SHARE = 0.75
#: ... and is voiced (PESTO confident) in at least this share of its frames.
SINGLE_VOICE_MIN_VOICED = 0.35
#: At most this much of a clip is pitch-tracked (PESTO costs ~30 ms per second of audio).
MAX_SUNG_S = 20.0
#: Confidence below this: "nothing really similar" (see :func:`melody_confidence`).
MELODY_NOTHING_BELOW = 0.2
#: Harmonics whose energy counts as the tracked voice's.
_HARMONICS = 8


@dataclass(frozen=True)
class SungQuery:
    """What the melody route needs of a query clip."""

    midi: np.ndarray  # [T] float32 MIDI at 10 fps, NaN unvoiced
    voiced_share: float  # share of frames with a confident pitch
    harmonic_share: float  # energy on the tracked pitch's harmonics ÷ energy up to its 8th harmonic

    @property
    def enough_tune(self) -> bool:
        return int(np.isfinite(self.midi).sum()) >= MIN_VOICED_FRAMES

    @property
    def single_voice(self) -> bool:
        return (
            self.enough_tune
            and self.voiced_share >= SINGLE_VOICE_MIN_VOICED
            and self.harmonic_share >= SINGLE_VOICE_MIN_SHARE
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "voiced_share": round(self.voiced_share, 3),
            "harmonic_share": round(self.harmonic_share, 3),
            "single_voice": self.single_voice,
        }


def harmonic_share(*, y: np.ndarray, midi: np.ndarray) -> float:
    """Energy on the harmonics (±a quarter tone) of ``midi [T]`` ÷ all energy from half its pitch to
    its 8th harmonic, over voiced frames, energy-weighted. ~0.9 for one voice, lower for several."""
    # librosa.stft's framing without importing librosa: that import is ~1 s of a fresh `cadenza search`.
    mag2 = stft_magnitude(np.asarray(y, dtype=np.float32)) ** 2
    n = min(mag2.shape[1], midi.size)
    ok = np.isfinite(midi[:n])
    if not ok.any():
        return 0.0
    bins = np.arange(mag2.shape[0], dtype=np.float64) * SAMPLE_RATE / N_FFT
    f0 = 440.0 * 2.0 ** ((midi[:n][ok].astype(np.float64) - 69.0) / 12.0)  # [V]
    spec = mag2[:, :n][:, ok].T  # [V, bins]
    h = bins[None, :] / f0[:, None]  # each bin in units of the frame's f0
    near = np.abs(h - np.round(h)) * f0[:, None] <= np.maximum(f0[:, None] * (2 ** (1 / 24) - 1), 16.0)
    band = (h >= 0.5) & (h <= _HARMONICS + 0.5)
    on = np.sum(spec * (near & band & (np.round(h) >= 1)), axis=1)
    total = np.sum(spec * band, axis=1)
    return float(np.sum(on) / max(float(np.sum(total)), 1e-20))


def melody_clip(*, audio: np.ndarray, start_s: float | None, duration_s: float) -> np.ndarray:
    """The part of a query clip the melody route tracks, leveled like library tracks.

    From ``start_s`` for ``duration_s`` when a start is given (as the audio route cuts it),
    else the clip's first :data:`MAX_SUNG_S` seconds.
    """
    y = np.asarray(audio, dtype=np.float32).reshape(-1)
    if start_s is not None:
        i0 = int(round(start_s * SAMPLE_RATE))
        y = y[i0 : i0 + int(round(min(duration_s, MAX_SUNG_S) * SAMPLE_RATE))]
    return prepare(y=y[: int(MAX_SUNG_S * SAMPLE_RATE)])


#: The salience settings the cheap test's threshold (SINGLE_VOICE_MIN_SHARE) was set with. The
#: library line later moved to stronger compression (retrieval.melody.COMPRESSION 0.5, decay 0.9),
#: which follows a chord's top note so well that three-note chord clips scored 0.84 and went the
#: melody route (0.47 with these); tests/test_bench.py's chord queries caught it.
QUICK_COMPRESSION, QUICK_DECAY = 1 / 3, 0.8


def quick_share(*, y: np.ndarray) -> float:
    """:func:`harmonic_share` of a salience pitch (no neural tracker): a cheap first test."""
    midi = melody_voices(y=y, voices=1, compression=QUICK_COMPRESSION, decay=QUICK_DECAY)[0]
    return harmonic_share(y=y, midi=midi)


def sung_query(*, y: np.ndarray) -> SungQuery:
    """Leveled mono 16-kHz ``y [n]`` (:func:`melody_clip`) → :class:`SungQuery`."""
    track = track_pitch(y=y)
    voiced = np.isfinite(track.midi)
    share = harmonic_share(y=y, midi=track.midi) if voiced.any() else 0.0
    return SungQuery(
        midi=track.midi, voiced_share=float(voiced.mean()) if voiced.size else 0.0, harmonic_share=share
    )


def melody_confidence(*, best: float, scores: np.ndarray) -> float:
    """How far ``best`` stands above this tune's match with the library at large, in [0, 1].

    0 at the 90th percentile of ``scores`` (the query's best alignment in each 2-s stretch of the
    library: what an unrelated passage reaches), 1 at a perfect match. Relative to the query's own score distribution, so a
    short or repetitive hum (high scores everywhere) is not over-confident.
    """
    ref = float(np.quantile(scores, 0.9)) if scores.size else 0.0
    return float(np.clip((best - ref) / max(1.0 - ref, 1e-6), 0.0, 1.0))


_ROWS_SQL = (
    "SELECT s.id, s.track_id, s.start_s, s.end_s, s.melody FROM segments s JOIN tracks t ON t.id = s.track_id"
    " WHERE {where} AND s.melody IS NOT NULL"
)
_INFO_SQL = (
    "SELECT s.id, t.title, t.composer, t.work, t.era, t.path, t.duration_s, s.key_index, s.mode, s.key_confidence,"
    " s.tempo_bpm, s.loudness_db, s.brightness_hz, s.onset_density, s.valence, s.arousal"
    " FROM segments s JOIN tracks t ON t.id = s.track_id WHERE s.id = ANY(%s)"
)


@dataclass
class MelodyHits:
    results: list[Result]
    info: dict[str, Any]
    nothing_similar: bool


def _pick(m: LineMatch, *, k: int, one_per_track: bool, min_gap_s: float = 8.0) -> list[int]:
    """Positions of ``m``, best first: the best per track (or, without ``one_per_track``, passages
    of one track whose starts are ≥ ``min_gap_s`` apart)."""
    if one_per_track:
        best = m.track_best()
        return sorted(best.values(), key=lambda i: -float(m.score[i]))[:k]
    chosen: list[int] = []
    seen: dict[int, list[float]] = {}
    ok = np.flatnonzero(m.track >= 0)
    for i in ok[np.argsort(-m.score[ok], kind="stable")].tolist():
        t, s = int(m.track[i]), float(m.start_frame[i]) / MELODY_FPS
        if any(abs(s - x) < min_gap_s for x in seen.get(t, [])):
            continue
        seen.setdefault(t, []).append(s)
        chosen.append(i)
        if len(chosen) >= k:
            break
    return chosen


def _window_at(starts: np.ndarray, tracks: np.ndarray, *, track: int, start_s: float) -> int:
    """Index of the window of ``track`` that holds ``start_s`` (the latest one starting at or before it)."""
    mine = np.flatnonzero(tracks == track)
    before = mine[starts[mine] <= start_s + 1e-6]
    return int(before[np.argmax(starts[before])] if before.size else mine[np.argmin(starts[mine])])


def search_melody(
    conn: psycopg.Connection,
    *,
    sung: SungQuery,
    where: str,
    params: list[Any],
    k: int,
    one_per_track: bool = True,
) -> MelodyHits:
    """The ``k`` library windows whose melodic line best matches ``sung`` (filters: ``where``/``params``)."""
    rows = conn.execute(_ROWS_SQL.format(where=where), params).fetchall()  # type: ignore[call-overload]
    missing = scalar(
        conn,
        f"SELECT count(*) FROM segments s JOIN tracks t ON t.id = s.track_id WHERE {where} AND s.melody IS NULL",
        tuple(params),
    )
    info: dict[str, Any] = {"route": "melody", "melody": sung.to_json(), "melody_windows": len(rows)}
    if missing:
        info["melody_missing_windows"] = int(missing)
    if not rows:
        info["nothing_reason"] = "no library window has a melodic line yet; run `cadenza reindex`"
        return MelodyHits([], info, True)
    windows = [np.frombuffer(bytes(r[4]), dtype="<f2").astype(np.float32) for r in rows]
    ids = np.array([int(r[0]) for r in rows])
    tracks = np.array([int(r[1]) for r in rows])
    starts = np.array([float(r[2]) for r in rows])
    lines = join_windows(tracks=tracks, starts_s=starts, windows=windows, fps=MELODY_FPS)
    m = match_lines(query_midi=sung.midi, lines=lines)
    chosen = _pick(m, k=k, one_per_track=one_per_track)
    at = {
        i: _window_at(
            starts, tracks, track=int(m.track[i]), start_s=max(float(m.start_frame[i]), 0.0) / MELODY_FPS
        )
        for i in chosen
    }
    meta = {int(r[0]): r for r in conn.execute(_INFO_SQL, ([int(ids[w]) for w in at.values()],)).fetchall()}
    # Likeness among the library's tracks by their best melodic match (retrieval.likeness).
    track_best = {t: float(m.score[i]) for t, i in m.track_best().items()}
    # What an unrelated 2-s stretch reaches: the best alignment per 20 positions (one window hop).
    on = m.score[m.track >= 0]
    pooled = on[: on.size // 20 * 20].reshape(-1, 20).max(axis=1) if on.size >= 20 else on
    results = []
    for rank, i in enumerate(chosen, start=1):
        w = at[i]
        r = meta[int(ids[w])]
        (
            _,
            title,
            composer,
            work,
            era,
            path,
            duration,
            key,
            mode,
            kconf,
            tempo,
            loud,
            bright,
            dens,
            val,
            aro,
        ) = r
        shift = float(m.shift[i])
        semis = int(np.round(shift)) % 12
        semis = semis - 12 if semis > 6 else semis  # library = hummed + semis, in −5 … +6
        start = max(float(m.start_frame[i]) / MELODY_FPS, 0.0)
        sung_s = m.hum_frames * float(m.tempo[i]) / MELODY_FPS
        conf = melody_confidence(best=float(m.score[i]), scores=pooled)
        sung_key = KEY_NAMES[(int(key) - semis) % 12] if key is not None else None
        results.append(
            Result(
                rank=rank, segment_id=int(ids[w]), track_id=int(tracks[w]), title=title, composer=composer,
                work=work, era=era, path=path, start=round(start, 2),
                end=round(min(start + sung_s, float(duration)), 2),
                score=round(float(m.score[i]), 4), match=round(conf, 3),
                likeness=round(likeness(
                    score=float(m.score[i]), n_tracks=max(len(track_best) - 1, 1),
                    other_best=np.array([v for t, v in track_best.items() if t != int(tracks[w])]),
                ), 1),
                components={
                    "melody": round(float(m.score[i]), 4), "melody_shift": round(shift, 2),
                    "melody_tempo": round(float(m.tempo[i]), 3),
                },
                descriptors={
                    "key_index": key, "key": KEY_NAMES[key] if key is not None else None, "mode": mode,
                    "key_confidence": kconf, "tempo_bpm": tempo, "loudness_db": loud, "brightness_hz": bright,
                    "onset_density": dens, "valence": val, "arousal": aro, "sung_key": sung_key,
                },
                key_shift=semis,
                reason=melody_reason(semis=semis, tempo=float(m.tempo[i])),
            )
        )  # fmt: skip
    top = results[0] if results else None
    if top is not None:
        info["melody_key_shift"] = top.key_shift
        info["melody_tempo"] = top.components["melody_tempo"]
        info["sung_key"] = top.descriptors.get("sung_key")
        info["matched_key"] = top.descriptors.get("key")
    nothing = top is None or top.match < MELODY_NOTHING_BELOW
    if nothing:
        info["nothing_reason"] = "no library melody stands out from the rest for this tune"
    return MelodyHits(results, info, nothing)


def melody_reason(*, semis: int, tempo: float) -> str:
    """One sentence: how the tune matched (transposition and tempo)."""
    if semis == 0:
        key = "in the recording's key"
    else:
        key = f"{abs(semis)} semitone{'s' if abs(semis) != 1 else ''} {'lower' if semis > 0 else 'higher'} than the recording"
    pace = "" if abs(tempo - 1.0) < 0.035 else f", {'faster' if tempo > 1 else 'slower'} (×{tempo:.2f})"
    return f"the tune matches, sung {key}{pace}"
