"""The same-passage check (retrieval.passage): alignment on stored chroma and the rerank term it adds."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.synth_audio import SR, random_chord_track
from encoder.features import CHROMA, FPS, HOP, acoustic_features, chroma_phases
from retrieval.localize import lag_scores, localize, unit_rows
from retrieval.passage import (
    CHROMA_PHASES,
    PASSAGE_FLOOR,
    PASSAGE_TRACKS,
    PASSAGE_TRACKS_BAND_LIMITED,
    PASSAGE_WEIGHT,
    SEARCH_S,
    add_passage_term,
    align,
    align_many,
    check_passages,
    passage_bonus,
    smooth,
    top_tracks,
)
from retrieval.rerank import Candidate


@pytest.fixture(scope="module")
def track():
    y = random_chord_track(seconds=60, seed=11)
    return y, acoustic_features(y=y)[:, CHROMA]


def _clip(y, start_s, seconds):
    return acoustic_features(y=y[int(start_s * SR) : int((start_s + seconds) * SR)])[:, CHROMA]


def test_lag_scores_equal_the_loop_they_replace():
    rng = np.random.default_rng(0)
    t = unit_rows(np.abs(rng.standard_normal((300, 12))))
    q = unit_rows(np.abs(rng.standard_normal((40, 12))))
    got = lag_scores(q, t, 250, 299)  # the last lags run past the track's end: those rows count 0
    for i, lag in enumerate(range(250, 300)):
        n = min(40, 300 - lag)
        assert got[i] == pytest.approx(float(np.sum(q[:n] * t[lag : lag + n])) / 40, abs=1e-12)


def test_align_finds_the_passage_around_any_of_several_segments(track):
    y, full = track
    clip = _clip(y, 37.3, 10)
    # The first approximate start is far off (another segment of the track); the second is near.
    a = align(query_chroma=clip, track_chroma=full, approx_starts=[4.0, 36.0])
    assert abs(a.start_s - 37.3) <= 0.2 and a.score > 0.9 and a.shift == 0
    # Around the far segment alone the passage is out of reach, and the best line-up is poor.
    far = align(query_chroma=clip, track_chroma=full, approx_starts=[4.0])
    assert abs(far.start_s - 37.3) > 5 and far.score < a.score - 0.2


def test_align_keeps_the_query_key_when_a_shift_is_spurious(track):
    y, full = track
    clip = _clip(y, 21.6, 5)  # a 5-s clip: its mean chroma can suggest a wrong key against a 10-s segment
    a = align(query_chroma=clip, track_chroma=full, approx_starts=[20.0], shifts=(0, 5))
    assert a.shift == 0 and abs(a.start_s - 21.6) <= 0.2
    moved = align(
        query_chroma=np.roll(clip, -3, axis=1), track_chroma=full, approx_starts=[20.0], shifts=(0, 3)
    )
    assert moved.shift == 3 and abs(moved.start_s - 21.6) <= 0.2


def test_align_matches_localize_on_smoothed_chroma(track):
    y, full = track
    clip = _clip(y, 12.2, 10)
    a = align(query_chroma=clip, track_chroma=full, approx_starts=[12.0])
    start, score = localize(query_chroma=smooth(clip), track_chroma=smooth(full), approx_start_s=12.0)
    assert a.start_s == pytest.approx(start) and a.score == pytest.approx(score)


def test_align_with_nothing_to_compare():
    a = align(query_chroma=np.zeros((0, 12)), track_chroma=np.ones((50, 12)), approx_starts=[3.0])
    assert a.start_s == 3.0 and a.score == -1.0


def test_passage_bonus_is_zero_up_to_the_floor():
    assert passage_bonus(PASSAGE_FLOOR) == 0.0 and passage_bonus(0.1) == 0.0
    assert passage_bonus(1.0) == 1.0
    assert 0.0 < passage_bonus((1 + PASSAGE_FLOOR) / 2) == pytest.approx(0.5)


def _cand(sid, tid, sim, start):
    c = Candidate(segment_id=sid, track_id=tid, start_s=start, end_s=start + 10, emb_sim=sim, title=f"t{tid}")
    c.terms = {"embedding": (1.0, sim)}
    c.score = sim
    return c


def test_the_passage_term_lifts_the_track_that_lines_up(track):
    y, full = track
    other = acoustic_features(y=random_chord_track(seconds=60, seed=12))[:, CHROMA]
    clip = _clip(y, 41.7, 10)
    # Track 2 (other music) scores a little higher by embedding; track 1 holds the passage, but its
    # best segment by embedding is elsewhere (0 s), its third one near the passage (40 s).
    cands = [
        _cand(1, 2, 0.80, 30.0),
        _cand(2, 1, 0.78, 0.0),
        _cand(3, 1, 0.70, 20.0),
        _cand(4, 1, 0.69, 40.0),
    ]
    assert top_tracks(cands) == [2, 1]
    aligned = check_passages(cands=cands, query_chroma=clip, chromas={1: full, 2: other}, window_frames=100)
    assert abs(aligned[1].start_s - 41.7) <= 0.2 and aligned[1].score > 0.9
    assert aligned[2].score < PASSAGE_FLOOR + 0.1
    ranked = add_passage_term(cands, aligned)
    assert ranked[0].track_id == 1 and ranked[0].components["passage"] == pytest.approx(
        aligned[1].score, abs=1e-4
    )
    # Every candidate carries the term (0 where nothing lines up), so unchecked ones scale alike.
    assert all(c.terms["passage"][0] == PASSAGE_WEIGHT for c in ranked)
    two = next(c for c in ranked if c.track_id == 2)
    assert two.score == pytest.approx(
        (0.80 + PASSAGE_WEIGHT * passage_bonus(aligned[2].score)) / (1 + PASSAGE_WEIGHT)
    )


def test_no_chroma_no_change():
    cands = [_cand(1, 2, 0.80, 0.0), _cand(2, 1, 0.78, 0.0)]
    aligned = check_passages(cands=cands, query_chroma=np.ones((100, 12)), chromas={}, window_frames=100)
    assert aligned == {}
    assert [c.track_id for c in add_passage_term(cands, aligned)] == [2, 1]


def test_align_many_gives_each_track_what_align_gives_it_alone():
    rng = np.random.default_rng(3)
    q = np.abs(rng.standard_normal((60, 12)))
    tracks = [
        (np.abs(rng.standard_normal((400, 12))), [10.0, 25.0], (0, 2)),
        (np.abs(rng.standard_normal((150, 12))), [13.0], (0,)),  # the lags run past the track's end
        (np.zeros((0, 12)), [5.0], (0,)),  # no chroma stored
        (np.abs(rng.standard_normal((300, 12))), [], (0,)),  # no segment
        (np.abs(rng.standard_normal((300, 12))), [2.0, 28.0], (-1, 0)),
    ]
    got = align_many(query_chroma=q, tracks=tracks)
    for (chroma, starts, shifts), a in zip(tracks, got, strict=True):
        alone = align(query_chroma=q, track_chroma=chroma, approx_starts=starts, shifts=shifts)
        assert (a.start_s, a.shift) == (alone.start_s, alone.shift)
        assert a.score == pytest.approx(alone.score, abs=1e-6)
        if len(chroma) and starts:  # the reference: lag_scores over the lags within reach
            t = unit_rows(smooth(chroma))
            best = max(
                (lag_scores(unit_rows(np.roll(smooth(q), s, axis=1)), t, lag, lag)[0], lag / FPS)
                for s in shifts
                for lag in range(len(chroma))
                if any(abs(lag / FPS - st) <= SEARCH_S + 1e-9 for st in starts)
            )
            assert a.score == pytest.approx(best[0], abs=1e-5) and a.start_s == pytest.approx(
                best[1]
            )  # float32


def test_chroma_phases_are_the_clip_cut_a_fraction_of_a_frame_later(track):
    y, _ = track
    clip = y[int(12.0 * SR) : int(22.0 * SR)]
    phases = chroma_phases(y=clip, phases=4, frames=100)
    assert phases.shape == (3, 100, 12)
    for k in (1, 2, 3):
        later = acoustic_features(y=clip[k * HOP // 4 :])[:, CHROMA]
        # The first frame differs: the later cut zero-pads what the phase still hears.
        np.testing.assert_allclose(phases[k - 1, 1:90], later[1:90], atol=1e-5)


def test_a_clip_cut_between_frames_lines_up_at_its_own_phase(track):
    y, full = track
    start = 31.35  # half a frame off the stored 10-fps grid
    seg = y[int(start * SR) : int((start + 10) * SR)]
    clip = acoustic_features(y=seg)[:, CHROMA]
    cands = [_cand(1, 1, 0.9, 30.0)]
    on_grid = check_passages(cands=cands, query_chroma=clip, chromas={1: full}, window_frames=100)[1]
    phased = check_passages(
        cands=cands, query_chroma=clip, chromas={1: full}, window_frames=100,
        query_phases=chroma_phases(y=seg, phases=CHROMA_PHASES, frames=len(clip)),
    )[1]  # fmt: skip
    assert phased.score > on_grid.score
    assert abs(phased.start_s - start) < 0.02 < abs(on_grid.start_s - start)


def test_a_phone_clip_lines_up_in_the_phone_band_chroma_and_tracks_found_otherwise_are_checked():
    """A clip through a phone line lines up better with the track's phone-band chroma (sql/009) than with
    its full chroma; the better of the two counts. ``also``: a track the embedding ranks out of the
    top PASSAGE_TRACKS (found by harmony) is checked too."""
    from encoder.augment import phone_band
    from encoder.features import acoustic_features_and_band_chroma

    y = random_chord_track(seconds=40, seed=2, key=3)
    frames, band = acoustic_features_and_band_chroma(y=y)
    full = frames[:, CHROMA]
    q = acoustic_features(y=phone_band(y=y[12 * SR : 22 * SR]))[:, CHROMA]
    # Track 7 holds the passage but sits below PASSAGE_TRACKS other tracks by embedding.
    cands = [_cand(i, 100 + i, 0.9 - 0.01 * i, 0.0) for i in range(PASSAGE_TRACKS)] + [
        _cand(99, 7, 0.5, 10.0)
    ]
    assert 7 not in top_tracks(cands) and top_tracks(cands, also=[7])[-1] == 7
    assert check_passages(cands=cands, query_chroma=q, chromas={7: full}, window_frames=100) == {}
    only_full = check_passages(cands=cands, query_chroma=q, chromas={7: full}, window_frames=100, also=[7])[7]
    both = check_passages(
        cands=cands, query_chroma=q, chromas={7: full}, band_chromas={7: band}, window_frames=100, also=[7]
    )[7]
    assert abs(both.start_s - 12.0) <= 0.2 and abs(only_full.start_s - 12.0) <= 0.2
    assert only_full.score < 0.9 and both.score > 0.95


def test_n_tracks_sets_how_far_down_the_ranking_the_passage_is_checked():
    """A clip that lost its bass is checked over PASSAGE_TRACKS_BAND_LIMITED tracks (retrieval.search): its
    own track, ranked below the first PASSAGE_TRACKS by embedding, is then lined up and found."""
    y = random_chord_track(seconds=40, seed=2, key=3)
    full = acoustic_features(y=y)[:, CHROMA]
    q = _clip(y, 12.0, 10)
    cands = [_cand(i, 100 + i, 0.9 - 0.01 * i, 0.0) for i in range(PASSAGE_TRACKS)] + [
        _cand(99, 7, 0.5, 10.0)
    ]
    assert PASSAGE_TRACKS_BAND_LIMITED > PASSAGE_TRACKS
    assert 7 not in check_passages(cands=cands, query_chroma=q, chromas={7: full}, window_frames=100)
    found = check_passages(
        cands=cands,
        query_chroma=q,
        chromas={7: full},
        window_frames=100,
        n_tracks=PASSAGE_TRACKS_BAND_LIMITED,
    )[7]
    assert abs(found.start_s - 12.0) <= 0.2 and found.score > 0.95


def test_the_other_phases_are_tried_on_the_best_aligned_spans_only(track):
    """PHASE_MAX_SPANS caps the spans tried at the other sub-frame phases; the best-aligned are kept."""
    import retrieval.passage as passage_mod

    y, full = track
    start = 20.0 + 0.5 / FPS  # half a frame off the grid: only another phase lines it up fully
    clip = acoustic_features(y=y[int(start * SR) : int((start + 10) * SR)])[:, CHROMA]
    phases = chroma_phases(
        y=y[int(start * SR) : int((start + 10) * SR)], phases=CHROMA_PHASES, frames=len(clip)
    )
    others = {
        i: acoustic_features(y=random_chord_track(seconds=30, seed=30 + i))[:, CHROMA] for i in range(3)
    }
    cands = [_cand(10 + i, 100 + i, 0.9, 0.0) for i in range(3)] + [_cand(1, 1, 0.8, 20.0)]
    chromas = {1: full, **{100 + i: c for i, c in others.items()}}
    kw = dict(cands=cands, query_chroma=clip, chromas=chromas, window_frames=100, query_phases=phases)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(passage_mod, "PHASE_MAX_SPANS", 1)
        capped = check_passages(**kw)
        mp.setattr(passage_mod, "PHASE_MAX_SPANS", 0)
        none = check_passages(**kw)
    assert capped[1].score > none[1].score  # the best-aligned span (the own track) got its phases
    assert all(capped[100 + i] == none[100 + i] for i in range(3))  # the others did not
