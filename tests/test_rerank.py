"""Reranking and diversity on constructed candidates (pure functions), plus localization."""

from __future__ import annotations

import numpy as np
import pytest

from encoder.features import CHROMA, acoustic_features
from retrieval.descriptors import chroma_sequence, mean_chroma
from retrieval.localize import localize
from retrieval.rerank import (
    Candidate,
    QueryProfile,
    harmonic_similarity,
    mmr,
    mood_similarity,
    nms,
    progression_similarity,
    reason,
    score_candidates,
    tempo_preference,
)
from retrieval.types import Weights
from tests.helpers_audio import SR, progression, random_chord_track


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
    top = mmr(candidates=cands, k=3, lam=0.7)
    assert [c.composer for c in top] == ["Bach", "Ravel", "Byrd"]
    assert [c.segment_id for c in mmr(candidates=cands, k=3, lam=1.0)] == [0, 1, 2]


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
    # Embedding only: the closer embedding wins.
    ranked = score_candidates(candidates=[same, diff], query=q, weights=Weights(harmony=0, progression=0))
    assert ranked[0].segment_id == 2
    # More harmony: the same progression a major third up wins, with its shift recorded.
    ranked = score_candidates(candidates=[same, diff], query=q, weights=Weights(harmony=1.0, progression=0.5))
    assert ranked[0].segment_id == 1 and ranked[0].key_shift == 4
    assert "major third up" in reason(ranked[0]) and ranked[0].components["harmony"] > 0.9
    ranked = score_candidates(candidates=[same, diff], query=q, weights=Weights(harmony=0, progression=0),
                              tempo_factor=0.8)  # fmt: skip
    assert ranked[0].segment_id == 1 and ranked[0].components["tempo"] == pytest.approx(1.0)
    ranked = score_candidates(candidates=[same, diff], query=q, weights=Weights(harmony=0, progression=0, discovery=1),
                              heard_composers={"ravel"})  # fmt: skip
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
