"""Plain-language result cards: likeness and match first, one sentence of why, the numbers in details."""

from __future__ import annotations

import numpy as np

from assistant import cards


def result(**over):
    r = {
        "rank": 1, "track_id": 7, "title": "Study 3", "composer": "Brahms", "era": "Romantic",
        "start": 12.0, "end": 22.0, "score": 0.71, "confidence": 0.04, "key_shift": 0, "reason": "raw",
        "components": {"embedding": 0.89, "harmony": 0.3, "progression": 0.26, "localization": 0.21},
        "descriptors": {"key_index": 2, "mode": "minor", "tempo_bpm": 96.0},
    }  # fmt: skip
    r.update(over)
    return r


def test_likeness_and_match_fall_back_to_the_measured_scores_until_search_gives_them():
    r = result()
    assert cards.likeness_of(r) == 0.89 and cards.match_of(r) == 0.04
    given = result(likeness=50.0, match=0.9)  # search gives likeness 0-100 (retrieval.likeness)
    assert cards.likeness_of(given) == 0.5 and cards.match_of(given) == 0.9


def test_the_why_sentence_is_plain_words_not_numbers():
    close = cards.why_sentence(result())
    assert close == "Very close in sound and texture."
    harmonic = cards.why_sentence(
        result(key_shift=-3, components={"embedding": 0.65, "harmony": 0.8, "progression": 0.7})
    )
    assert (
        harmonic
        == "Similar in sound and texture, with the same harmonic colour 3 semitones down and similar chord motion."
    )
    assert not any(ch.isdigit() for ch in cards.why_sentence(result(components={"embedding": 0.3})))


def test_the_numbers_live_in_the_details_rows():
    c = cards.card(result(), message_id=5, query_chroma=None, chroma=None)
    labels = dict(c["details"])
    assert labels["sound and texture"] == "0.89" and labels["chord motion"] == "0.26"
    assert labels["same-passage match"] == "4%" and labels["key"] == "D minor"
    assert c["range"] == "0:12–0:22" and c["anchor"] == "r5-1" and c["picture"] is None


def test_a_card_with_both_chromas_carries_the_overlay():
    rng = np.random.default_rng(0)
    q = rng.random((100, 12)).astype(np.float32)
    c = cards.card(result(key_shift=2), message_id=1, query_chroma=q, chroma=np.roll(q, 2, axis=1))
    assert "chroma-overlay" in str(c["picture"]) and c["key_shift"] == 2
