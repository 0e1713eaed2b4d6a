"""Reranking and diversity on constructed candidates (pure functions), plus localization."""

from __future__ import annotations

import numpy as np
import pytest

from cadenza.errors import InputError
from cadenza.synth_audio import SR, progression, random_chord_track
from encoder.features import CHROMA, acoustic_features
from retrieval.descriptors import chroma_sequence, mean_chroma
from retrieval.diversity import mmr, moves, nms
from retrieval.likeness import likeness
from retrieval.localize import localize
from retrieval.rerank import Candidate, QueryProfile, aspect_scores, chroma_terms, reason, score_candidates
from retrieval.similarity import (
    harmonic_similarity,
    melody_similarity,
    mood_similarity,
    progression_similarity,
    rhythm_similarity,
    tempo_preference,
)
from retrieval.types import Aspects, Weights, check_diversity


@pytest.fixture(scope="module")
def frames_c_and_e():
    c = acoustic_features(y=progression(degrees=[1, 4, 5, 1, 6, 2, 5, 1], key=0, chord_s=1.25))
    e = acoustic_features(y=progression(degrees=[1, 4, 5, 1, 6, 2, 5, 1], key=4, chord_s=1.25))
    other = acoustic_features(y=progression(degrees=[6, 3, 6, 2, 6, 3, 2, 6], key=4, chord_s=1.25))
    return c, e, other


def test_harmonic_similarity_is_key_invariant(frames_c_and_e):
    c, e, _ = frames_c_and_e
    sim, shift = harmonic_similarity(query=mean_chroma(frames=c), candidate=mean_chroma(frames=e))
    assert shift == 4 and sim > 0.95
    for s in range(-5, 7):
        rolled = np.roll(mean_chroma(frames=c), s)
        got, found = harmonic_similarity(query=mean_chroma(frames=c), candidate=rolled)
        assert found == s and got == pytest.approx(1.0)


def test_progression_likeness_prefers_the_same_progression_transposed(frames_c_and_e):
    c, e, other = frames_c_and_e
    qs = chroma_sequence(frames=c)
    _, shift = harmonic_similarity(query=mean_chroma(frames=c), candidate=mean_chroma(frames=e))
    same = progression_similarity(query=qs, candidate=chroma_sequence(frames=e), shift=shift)
    diff = progression_similarity(query=qs, candidate=chroma_sequence(frames=other), shift=shift)
    assert same > 0.8 and same > diff + 0.2


def _cand(i, track, composer, score, era="Baroque", start=0.0):
    return Candidate(segment_id=i, track_id=track, start_s=start, end_s=start + 10, emb_sim=score, composer=composer,
                     era=era, title=f"t{track}")  # fmt: skip


def test_nms_one_per_track_and_overlap():
    cands = [_cand(1, 1, "A", 0.9, start=10), _cand(2, 1, "A", 0.85, start=12), _cand(3, 2, "B", 0.8),
             _cand(4, 1, "A", 0.7, start=40)]  # fmt: skip
    assert [c.segment_id for c in nms(candidates=cands)] == [1, 3]
    assert [c.segment_id for c in nms(candidates=cands, one_per_track=False)] == [1, 3, 4]


def test_mmr_spreads_composers_and_eras():
    cands = [_cand(i, i, "Bach", 0.9 - 0.01 * i) for i in range(5)]
    cands += [_cand(10, 10, "Ravel", 0.84, era="Modern"), _cand(11, 11, "Byrd", 0.83, era="Renaissance")]
    for c in cands:
        c.score = c.emb_sim
    top = mmr(candidates=cands, k=3, diversity=1.0)
    assert [c.composer for c in top] == ["Bach", "Ravel", "Byrd"]
    assert [c.segment_id for c in mmr(candidates=cands, k=3, diversity=0.0)] == [0, 1, 2]


def test_score_components_weights_mood_tempo_discovery(frames_c_and_e):
    c, e, other = frames_c_and_e
    q = QueryProfile(embedding=np.ones(4) / 2, chroma_mean=mean_chroma(frames=c), chroma_seq=chroma_sequence(frames=c),
                     tempo_bpm=100.0, tonalness=0.9)  # fmt: skip
    same = _cand(1, 1, "Bach", 0.5)
    same.chroma_mean, same.chroma_seq = mean_chroma(frames=e), chroma_sequence(frames=e)
    same.descriptors = {"valence": 0.8, "arousal": 0.5, "tempo_bpm": 80.0, "key_index": 4, "mode": "major"}
    diff = _cand(2, 2, "Ravel", 0.55)
    diff.chroma_mean, diff.chroma_seq = mean_chroma(frames=other), chroma_sequence(frames=other)
    diff.descriptors = {"valence": -0.8, "arousal": -0.5, "tempo_bpm": 140.0}
    # Embedding only (no rhythm or melody aspect either): the closer embedding wins.
    emb_only = Aspects(rhythm=0, melody=0)
    ranked = score_candidates(candidates=[same, diff], query=q, weights=Weights(harmony=0, progression=0),
                              aspects=emb_only)  # fmt: skip
    assert ranked[0].segment_id == 2
    # More harmony: the same progression a major third up wins, with its shift recorded.
    ranked = score_candidates(candidates=[same, diff], query=q, weights=Weights(harmony=1.0, progression=0.5))
    assert ranked[0].segment_id == 1 and ranked[0].key_shift == 4
    assert "major third up" in reason(ranked[0]) and ranked[0].components["harmony"] > 0.9
    ranked = score_candidates(candidates=[same, diff], query=q, weights=Weights(harmony=0, progression=0),
                              aspects=emb_only, tempo_factor=0.8)  # fmt: skip
    assert ranked[0].segment_id == 1 and ranked[0].components["tempo"] == pytest.approx(1.0)
    ranked = score_candidates(candidates=[same, diff], query=q, weights=Weights(harmony=0, progression=0, discovery=1),
                              aspects=emb_only, heard_composers={"ravel"})  # fmt: skip
    assert ranked[0].segment_id == 1 and ranked[0].components["discovery"] == 1.0
    assert mood_similarity(target=(0.8, 0.5), valence=0.8, arousal=0.5) == 1.0
    assert tempo_preference(query_bpm=100, factor=1.0, candidate_bpm=200) == 0.0


def test_localize_finds_the_offset_off_the_grid():
    track = random_chord_track(seconds=40, seed=5)
    full = acoustic_features(y=track)[:, CHROMA]
    for truth in (7.3, 18.9, 25.5):
        clip = acoustic_features(y=track[int(truth * SR) : int((truth + 10) * SR)])[:, CHROMA]
        grid = round(truth / 2) * 2
        start, score = localize(query_chroma=clip, track_chroma=full, approx_start_s=grid)
        assert abs(start - truth) <= 0.25 and score > 0.8
    # Transposed query: localization under the key shift.
    up = acoustic_features(y=track)[:, CHROMA]
    start, _ = localize(
        query_chroma=np.roll(up[100:200], -2, axis=1), track_chroma=full, approx_start_s=12, shift=2
    )
    assert abs(start - 10.0) <= 0.25


def _scored(specs):
    """[(segment, track, composer, era, score)] → candidates best first, scores set."""
    out = []
    for sid, tid, composer, era, score in specs:
        c = _cand(sid, tid, composer, score, era=era)
        c.score = score
        out.append(c)
    return out


def test_mmr_diversity_zero_is_the_plain_ranking_and_one_spreads():
    cands = _scored([(i, i, "Bach" if i < 4 else f"C{i}", "Baroque", 0.9 - 0.01 * i) for i in range(8)])
    assert [c.segment_id for c in mmr(candidates=cands, k=4, diversity=0.0)] == [0, 1, 2, 3]
    spread = [c.composer for c in mmr(candidates=cands, k=4, diversity=1.0)]
    assert spread.count("Bach") < 4
    moved = moves(ranked=cands, chosen=mmr(candidates=cands, k=4, diversity=1.0))
    assert any(m > 0 and "moved up" in why for m, why in moved)
    assert all(m == 0 and why == "" for m, why in moves(ranked=cands, chosen=cands[:4]))


def test_the_query_itself_does_not_use_up_its_composer():
    # The clip's own passage (segment 0) comes first; the same composer's other work (1) is the
    # best of the rest by a clear margin and must not be held back for being "Bach again".
    cands = _scored([(0, 0, "Bach", "Baroque", 0.99), (1, 1, "Bach", "Baroque", 0.80)]
                    + [(i, i, f"C{i}", "Baroque", 0.78 - 0.005 * i) for i in range(2, 12)])  # fmt: skip
    with_own = mmr(candidates=cands, k=5, diversity=0.3, same_passage=frozenset({0}))
    assert [c.segment_id for c in with_own[:2]] == [0, 1]
    counted = mmr(candidates=cands, k=5, diversity=0.3)  # the old behaviour: Bach counted as used
    assert 1 not in [c.segment_id for c in counted[:2]]


def test_aspect_weights_act_on_the_ranking(frames_c_and_e):
    c, e, other = frames_c_and_e
    q = QueryProfile(embedding=np.ones(4) / 2, chroma_mean=mean_chroma(frames=c), chroma_seq=chroma_sequence(frames=c),
                     tempo_bpm=100.0, tonalness=0.9, brightness_hz=1000.0, onset_density=2.0)  # fmt: skip
    # "harmonic": the same progression, another sound (darker, other pulse); "sounding": closer embedding and
    # brightness, unrelated chords.
    harmonic = _cand(1, 1, "Bach", 0.5)
    harmonic.chroma_mean, harmonic.chroma_seq = mean_chroma(frames=e), chroma_sequence(frames=e)
    harmonic.descriptors = {"tempo_bpm": 71.0, "brightness_hz": 400.0, "onset_density": 6.0}
    sounding = _cand(2, 2, "Ravel", 0.6)
    sounding.chroma_mean, sounding.chroma_seq = mean_chroma(frames=other), chroma_sequence(frames=other)
    sounding.descriptors = {"tempo_bpm": 100.0, "brightness_hz": 1000.0, "onset_density": 2.0}

    def first(a):
        return score_candidates(candidates=[harmonic, sounding], query=q, weights=Weights(), aspects=a)[0]

    assert first(Aspects(harmony=0, rhythm=0, melody=0)).segment_id == 2  # same sound, any harmony
    assert first(Aspects(sound=0, rhythm=0, melody=0)).segment_id == 1  # same harmony, any sound
    assert first(Aspects(sound=0, harmony=0, melody=0)).segment_id == 2  # the rhythm alone
    ranked = score_candidates(candidates=[harmonic, sounding], query=q, weights=Weights())
    asp = aspect_scores(next(x for x in ranked if x.segment_id == 2).components)
    assert set(asp) == {"sound", "harmony", "rhythm", "melody"} and asp["rhythm"] == pytest.approx(1.0)


def test_aspect_and_diversity_validation():
    with pytest.raises(InputError, match="diversity"):
        check_diversity(1.5)
    with pytest.raises(InputError, match="diversity"):
        check_diversity(float("nan"))
    with pytest.raises(InputError, match="diversity"):
        check_diversity(True)
    assert check_diversity("0.4") == 0.4
    with pytest.raises(InputError, match="rhythm"):
        Aspects(rhythm=-1).validated()
    with pytest.raises(InputError, match="at least one"):
        Aspects(sound=0, harmony=0, rhythm=0, melody=0).validated()


def test_rhythm_is_octave_tolerant_and_melody_key_invariant(frames_c_and_e):
    assert (
        rhythm_similarity(query_bpm=100, candidate_bpm=200, query_onsets=None, candidate_onsets=None) == 1.0
    )
    assert (
        rhythm_similarity(query_bpm=100, candidate_bpm=141.4, query_onsets=None, candidate_onsets=None) < 0.01
    )
    assert (
        rhythm_similarity(query_bpm=None, candidate_bpm=None, query_onsets=None, candidate_onsets=None)
        is None
    )
    c, e, other = frames_c_and_e
    qs = chroma_sequence(frames=c)
    assert melody_similarity(query=qs, candidate=chroma_sequence(frames=e), shift=4) > 0.8
    assert melody_similarity(query=qs, candidate=chroma_sequence(frames=e), shift=0) < 0.3


def test_likeness_reads_rank_among_the_library_on_a_log_scale():
    others = np.linspace(0.0, 0.5, 999)  # 999 other tracks
    assert likeness(score=0.9, other_best=others, n_tracks=1000) == 100.0  # the nearest other track
    tenth = likeness(score=float(np.sort(others)[-9]) - 1e-6, other_best=others, n_tracks=1000)
    assert tenth == pytest.approx(66.7, abs=0.5)
    assert likeness(score=0.25, other_best=others, n_tracks=1000) == pytest.approx(10.0, abs=1.0)
    # Monotone in the score: the shown likeness never disagrees with the score order.
    ls = [likeness(score=s, other_best=others, n_tracks=1000) for s in np.linspace(0, 0.6, 50)]
    assert all(a <= b for a, b in zip(ls, ls[1:], strict=False))


def test_the_sound_aspect_compares_timbre_vectors_of_one_model_and_falls_back_to_brightness():
    flat = np.full(12, 1 / 12)
    q = QueryProfile(embedding=np.ones(4) / 2, chroma_mean=flat, chroma_seq=None, brightness_hz=1000.0,
                     timbre=np.array([1.0, 0.0, 0.0]), timbre_version="timbre-a", timbre_weight=2.0)  # fmt: skip
    # Same embedding similarity; one sounds like the query, the other does not.
    alike = _cand(1, 1, "A", 0.5)
    alike.timbre, alike.timbre_version = np.array([1.0, 0.0, 0.0]), "timbre-a"
    unlike = _cand(2, 2, "B", 0.5)
    unlike.timbre, unlike.timbre_version = np.array([-1.0, 0.0, 0.0]), "timbre-a"
    for c in (alike, unlike):
        c.descriptors = {"brightness_hz": 1000.0}
    ranked = score_candidates(candidates=[unlike, alike], query=q, weights=Weights(), aspects=Aspects())
    assert ranked[0].segment_id == 1
    assert ranked[0].components["timbre"] == pytest.approx(1.0) and ranked[1].components["timbre"] == 0.0
    assert "similar timbre and production" in reason(ranked[0])
    # The fitted weight is the timbre term's weight, scaled by the sound aspect; sound 0 removes it.
    assert ranked[0].terms["timbre"][0] == pytest.approx(2.0)
    muted = score_candidates(candidates=[unlike, alike], query=q, weights=Weights(), aspects=Aspects(sound=0))
    assert all(c.terms["timbre"][0] == 0.0 for c in muted)
    # A vector of another timbre model is not compared: brightness (equal here) stands in.
    unlike.timbre_version = "timbre-old"
    ranked = score_candidates(candidates=[unlike, alike], query=q, weights=Weights(), aspects=Aspects())
    assert next(c for c in ranked if c.segment_id == 2).components["timbre"] == pytest.approx(1.0)


def test_the_track_sound_term_ranks_by_the_whole_track_and_follows_the_sound_weight():
    flat = np.full(12, 1 / 12)
    q = QueryProfile(embedding=np.ones(4) / 2, chroma_mean=flat, chroma_seq=None, timbre=np.array([1.0, 0.0, 0.0]),
                     timbre_version="timbre-a", timbre_weight=1.0, track_timbre_weight=2.0)  # fmt: skip
    # Equal windows; only the tracks differ: one sounds like the query over its whole length.
    alike, unlike = _cand(1, 1, "A", 0.5), _cand(2, 2, "B", 0.5)
    for c, mean in ((alike, [0.6, 0.0, 0.0]), (unlike, [-0.3, 0.3, 0.0])):  # means of unit vectors: not unit
        c.timbre, c.timbre_version, c.track_timbre = np.array([0.0, 1.0, 0.0]), "timbre-a", np.array(mean)
    ranked = score_candidates(candidates=[unlike, alike], query=q, weights=Weights(), aspects=Aspects())
    assert [c.segment_id for c in ranked] == [1, 2]
    # Compared as a direction: a mean vector's length does not count.
    assert ranked[0].components["timbre_track"] == pytest.approx(1.0)
    assert ranked[1].components["timbre_track"] == pytest.approx(0.5 * (1 - 0.5**0.5), abs=1e-3)
    assert ranked[0].terms["timbre_track"][0] == pytest.approx(2.0)
    assert aspect_scores(ranked[0].components)["sound"] > aspect_scores(ranked[1].components)["sound"]
    # "Any sound": the sound aspect at 0 removes the term, and the two tie again.
    muted = score_candidates(candidates=[unlike, alike], query=q, weights=Weights(), aspects=Aspects(sound=0))
    assert all(c.terms["timbre_track"][0] == 0.0 for c in muted)
    assert muted[0].score == pytest.approx(muted[1].score)
    # Without the weight (a model fitted before the term) the term is not measured.
    q.track_timbre_weight = 0.0
    plain = score_candidates(candidates=[unlike, alike], query=q, weights=Weights(), aspects=Aspects())
    assert all("timbre_track" not in c.components for c in plain)
    assert plain[0].score == pytest.approx(plain[1].score)


def test_batched_chroma_terms_equal_the_one_by_one_functions():
    """chroma_terms scores all candidates at once; each value must be what the one-candidate functions give."""
    rng = np.random.default_rng(7)
    q_seq = rng.random((20, 12))
    query = QueryProfile(embedding=np.ones(4) / 2, chroma_mean=rng.random(12), chroma_seq=q_seq)
    cands = []
    for i in range(60):
        m = [20, 20, 20, 14, 6, 3, 0][i % 7]  # full windows, a tail, too short to lag, empty
        cands.append(Candidate(
            segment_id=i, track_id=i, start_s=0.0, end_s=10.0, emb_sim=0.5,
            chroma_mean=None if i % 11 == 5 else rng.random(12),
            chroma_seq=None if i % 13 == 4 else rng.random((m, 12)).astype(np.float16),
        ))  # fmt: skip
    hs, shifts, ps, mels = chroma_terms(cands, query=query)
    assert len({int(s) for s in shifts}) > 4  # the groups by key shift are exercised
    for k, c in enumerate(cands):
        h, shift = (
            (0.0, 0)
            if c.chroma_mean is None
            else harmonic_similarity(query=query.chroma_mean, candidate=c.chroma_mean)
        )
        assert int(shifts[k]) == shift and hs[k] == pytest.approx(h, abs=1e-12)
        if c.chroma_seq is None or not len(c.chroma_seq):
            assert ps[k] == 0.0 and mels[k] is None
            continue
        want_p = progression_similarity(query=q_seq, candidate=c.chroma_seq, shift=shift)
        assert ps[k] == pytest.approx(want_p, abs=1e-12)
        assert mels[k] == pytest.approx(
            melody_similarity(query=q_seq, candidate=c.chroma_seq, shift=shift), abs=1e-12
        )
    # A query without a sequence measures harmony only.
    hs2, shifts2, ps2, mels2 = chroma_terms(
        cands, query=QueryProfile(embedding=query.embedding, chroma_mean=query.chroma_mean, chroma_seq=None)
    )
    assert (
        np.array_equal(hs2, hs)
        and np.array_equal(shifts2, shifts)
        and not ps2.any()
        and mels2 == [None] * len(cands)
    )
