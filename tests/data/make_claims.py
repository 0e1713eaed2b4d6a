"""Generate tests/data/claims.json: scripted model explanations with every claim labelled.

The answer each explanation is about is :data:`RESPONSE` (three results with known metadata and
measured descriptors). Each explanation is a few sentences built from phrasing frames; each claim
in it is labelled by construction, from the facts, never by running the checker:

- ``true``: the facts support it (the result's key, composer, era, a mood word on the measured side);
- ``contradicted``: the facts say otherwise (another key, another composer, a year outside the era);
- ``unsupported``: nothing in the facts says either way (a place, a meter, a year inside the era).

The frames deliberately use phrasings of varying difficulty ("in the key of D minor",
"Beethoven's", "from the 1780s", "melancholic"), so the score measures the checker, not the frames.

    python tests/data/make_claims.py [OUT_FILE]
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path


def _result(
    rank: int, title: str, composer: str, era: str, key: int, mode: str, bpm: float, val: float, aro: float
):
    return {
        "rank": rank, "segment_id": rank, "track_id": rank, "title": title, "composer": composer, "work": title,
        "era": era, "start": 10.0 * rank, "end": 10.0 * rank + 10, "score": 0.9, "confidence": 0.8, "key_shift": 0,
        "reason": "", "components": {"embedding": 0.8, "harmony": 0.9},
        "descriptors": {"key_index": key, "mode": mode, "tempo_bpm": bpm, "valence": val, "arousal": aro},
    }  # fmt: skip


RESPONSE = {
    "query": {"key_index": 7, "mode": "major", "tempo_bpm": 70.0, "valence": 0.5, "arousal": -0.5},
    "nothing_similar": False,
    "results": [
        _result(1, "Serenade in G for strings", "Wolfgang Amadeus Mozart", "Classical", 7, "major", 72.0, 0.45, -0.4),
        _result(2, "Maple Leaf Rag", "Scott Joplin", "Romantic", 8, "major", 100.0, 0.5, 0.5),
        _result(3, "Funeral Chorale for organ", "Johann Sebastian Bach", "Baroque", 2, "minor", 60.0, -0.5, -0.45),
    ],
    "timings_ms": {},
}  # fmt: skip

#: Per result: (true, contradicted, unsupported) claim words by kind.
FACTS = {
    1: {
        "key": (["G major", "G-major"], ["D minor", "E major", "F# major"]),
        "composer": (
            ["Mozart", "W. A. Mozart", "Wolfgang Amadeus Mozart"],
            ["Beethoven", "Haydn", "J. S. Bach"],
        ),
        "era": (["Classical"], ["Baroque", "Romantic"]),
        "mood": (["serene", "calm", "gentle", "cheerful"], ["sad", "agitated", "melancholic", "energetic"]),
        "tempo": (["72 BPM", "about 70 bpm"], ["130 BPM", "100 beats per minute"]),
        "form": (["serenade"], ["march", "waltz", "fugue"]),
        "instrument": (["strings"], ["piano", "organ"]),
        "year_true": [],
        "year_contra": ["1902", "1650", "1880"],
        "year_unsup": ["1787", "1782"],
    },
    2: {
        "key": (["Ab major", "A flat major"], ["C minor", "G major"]),
        "composer": (["Joplin", "Scott Joplin"], ["Beethoven", "Chopin", "Mozart"]),
        "era": (["Romantic"], ["Baroque", "Medieval"]),
        "mood": (["cheerful", "lively", "energetic", "joyful"], ["sad", "calm", "gloomy", "serene"]),
        "tempo": (["100 BPM", "200 bpm"], ["140 BPM", "65 bpm"]),
        "form": (["rag"], ["chorale", "nocturne", "fugue"]),
        "instrument": ([], []),
        "year_true": [],
        "year_contra": ["1750", "1950"],
        "year_unsup": ["1899", "1870"],
    },
    3: {
        "key": (["D minor", "D-minor"], ["D major", "A minor", "C major"]),
        "composer": (["Bach", "J.S. Bach", "Johann Sebastian Bach"], ["Mozart", "Handel", "Vivaldi"]),
        "era": (["Baroque"], ["Classical", "Modern"]),
        "mood": (["sad", "melancholic", "sombre", "calm"], ["cheerful", "energetic", "joyful", "lively"]),
        "tempo": (["60 BPM", "120 bpm"], ["90 BPM", "150 beats per minute"]),
        "form": (["chorale"], ["rag", "waltz", "sonata"]),
        "instrument": (["organ"], ["piano", "guitar", "violin"]),
        "year_true": [],
        "year_contra": ["1820", "1905"],
        "year_unsup": ["1724", "1731"],
    },
}
PLACES = ["Vienna", "Leipzig", "Paris", "Sedalia", "Salzburg"]
METERS = ["3/4", "6/8", "4/4"]

#: Sentence frames: {n} the cited result, then claim slots. Each slot is (kind, frame text).
FRAMES = [
    ("[{n}] sits in {key}", ("key",)),
    ("In the key of {key}, [{n}] echoes the query", ("key",)),
    ("[{n}] is a {mood} {form}", ("mood", "form")),
    ("The {era} piece [{n}] moves at {tempo}", ("era", "tempo")),
    ("[{n}] was written by {composer}", ("composer",)),
    ("{composer} wrote [{n}] in {year}", ("composer", "year")),
    ("[{n}], by {composer}, feels {mood}", ("composer", "mood")),
    ("You can hear {instrument} in [{n}]", ("instrument",)),
    ("[{n}] is a {form} in {meter}, composed in {place}", ("form", "meter", "place")),
    ("[{n}] has a {mood} character at {tempo}", ("mood", "tempo")),
    ("Like the query, [{n}] is {era} music from {year}", ("era", "year")),
    ("[{n}] is a {form} for {instrument} in {key}", ("form", "instrument", "key")),
]


def _pick(rng: random.Random, facts: dict, kind: str) -> tuple[str, str] | None:
    """(claim text, label) for one slot, or None when this result has no value of that kind."""
    if kind == "year":
        choices = [(y, "contradicted") for y in facts["year_contra"]] + [
            (y, "unsupported") for y in facts["year_unsup"]
        ]
        return rng.choice(choices)
    if kind == "place":
        return rng.choice(PLACES), "unsupported"
    if kind == "meter":
        return rng.choice(METERS), "unsupported"
    true, contra = facts[kind]
    label = rng.choice(["true", "contradicted"]) if true and contra else ("true" if true else "contradicted")
    pool = true if label == "true" else contra
    if not pool:
        return None
    return rng.choice(pool), label


def build(count: int = 72, seed: int = 16) -> list[dict]:
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        sentences, labels = [], []
        for _ in range(rng.choice([1, 2, 2, 3])):
            frame, kinds = rng.choice(FRAMES)
            n = rng.choice([1, 2, 3])
            slots = {}
            ok = True
            for kind in kinds:
                picked = _pick(rng, FACTS[n], kind)
                if picked is None:
                    ok = False
                    break
                slots[kind] = picked
            if not ok:
                continue
            sentence = frame.format(n=n, **{k: v[0] for k, v in slots.items()}) + "."
            sentences.append(sentence[0].upper() + sentence[1:])
            labels += [{"kind": k, "text": v[0], "label": v[1], "result": n} for k, v in slots.items()]
        if sentences:
            out.append({"id": len(out) + 1, "explanation": " ".join(sentences), "claims": labels})
    return out


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("claims.json")
    data = {"response": RESPONSE, "explanations": build()}
    out.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    n = sum(len(e["claims"]) for e in data["explanations"])
    print(f"wrote {len(data['explanations'])} explanations with {n} labelled claims to {out}")


if __name__ == "__main__":
    main()
