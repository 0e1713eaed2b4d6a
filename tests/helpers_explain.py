"""A search response to explain: three results from three composers, with the query's descriptors.

The explanation tests (tests/test_llm.py) and the claim checks (tests/test_claims.py) share it.
"""

from __future__ import annotations


def _result(
    rank: int, *, composer: str, era: str, key_index: int, mode: str, bpm: float, harmony: float
) -> dict:
    return {
        "rank": rank, "segment_id": 100 + rank, "track_id": rank, "title": f"Piece {rank}", "composer": composer,
        "work": "", "era": era, "path": f"/srv/secret/{rank}.wav", "start": 60.0 + rank, "end": 70.0 + rank,
        "score": 0.9 - rank / 20, "match": 0.8, "likeness": 90.0, "key_shift": 0, "reason": "",
        "components": {"embedding": 0.8, "harmony": harmony},
        "descriptors": {"key_index": key_index, "mode": mode, "tempo_bpm": bpm, "loudness_db": -22.0,
                        "brightness_hz": 1500.0, "onset_density": 2.0, "valence": 0.4, "arousal": -0.4},
    }  # fmt: skip


RESPONSE = {
    "query": {"start": 12.0, "end": 22.0, "key_index": 7, "mode": "major", "tempo_bpm": 70.0, "loudness_db": -25.0,
              "brightness_hz": 1100.0, "onset_density": 1.2, "valence": 0.5, "arousal": -0.5},
    "nothing_similar": False,
    "results": [
        _result(1, composer="Bach", era="Baroque", key_index=7, mode="major", bpm=72.0, harmony=0.93),
        _result(2, composer="Mozart", era="Classical", key_index=2, mode="major", bpm=140.0, harmony=0.91),
        _result(3, composer="Brahms", era="Romantic", key_index=9, mode="minor", bpm=60.0, harmony=0.55),
    ],
    "timings_ms": {},
}  # fmt: skip
