"""Claim-by-claim checking of a model's explanation against the facts it was given.

Each clause of the explanation is about the results it cites (or, citing none, the query passage).
Every claim found in it — a key, a mode, a tempo, a mood word, a composer, an era, a year, an
instrument or a musical form, a meter, a place — is compared with the structured facts of the
answer (measured descriptors, metadata): *supported*, *contradicted* (the facts say otherwise; the
measured value is given), or *unverified* (nothing in the facts says either way). :func:`mark`
puts the verdict at the claim itself, :func:`drop_bad_citations` removes a citation of a result
that does not exist together with its clause, so no broken sentence remains.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from assistant import composers as composer_names
from assistant import describe
from retrieval.descriptors import KEY_NAMES

SUPPORTED, CONTRADICTED, UNVERIFIED = "supported", "contradicted", "unverified"

#: Markers of a checked claim inside the stored Markdown (Unicode private use, stripped from
#: model text first): CONTRA_OPEN claim NOTE note CLOSE, UNVER_OPEN claim CLOSE.
CONTRA_OPEN, NOTE, UNVER_OPEN, CLOSE = "\ue000", "\ue001", "\ue002", "\ue003"
_MARKERS = re.compile("[\ue000-\ue003]")

#: Composers a model may name though no result is theirs (checked as whole names).
KNOWN_COMPOSERS = (
    "Johann Sebastian Bach", "Wolfgang Amadeus Mozart", "Ludwig van Beethoven", "Frédéric Chopin",
    "Johannes Brahms", "Joseph Haydn", "George Frideric Handel", "Antonio Vivaldi", "Franz Schubert",
    "Robert Schumann", "Franz Liszt", "Claude Debussy", "Richard Wagner", "Giuseppe Verdi",
    "Pyotr Ilyich Tchaikovsky", "Scott Joplin", "Giovanni Pierluigi da Palestrina", "Claudio Monteverdi",
    "Felix Mendelssohn", "Antonín Dvořák", "Gustav Mahler", "Igor Stravinsky", "Maurice Ravel",
    "Erik Satie", "Sergei Rachmaninoff", "Henry Purcell", "Guillaume de Machaut", "Hildegard von Bingen",
)  # fmt: skip
ERAS = ("Medieval", "Renaissance", "Baroque", "Classical", "Romantic", "Modern", "Contemporary")
#: The years of each era, as retrieval.metadata.era_from_year assigns them.
ERA_YEARS = {
    "Medieval": (500, 1400), "Renaissance": (1400, 1600), "Baroque": (1600, 1750), "Classical": (1750, 1820),
    "Romantic": (1820, 1900), "Modern": (1900, 1975), "Contemporary": (1975, 2100),
}  # fmt: skip
INSTRUMENTS = (
    "piano", "organ", "harpsichord", "violin", "viola", "cello", "double bass", "guitar", "lute", "flute",
    "oboe", "clarinet", "bassoon", "trumpet", "horn", "trombone", "tuba", "harp", "choir", "voice",
    "strings", "string quartet", "orchestra", "recorder", "accordion", "synthesizer", "drums", "marimba",
)  # fmt: skip
FORMS = (
    "rag", "march", "waltz", "fugue", "chorale", "sonata", "minuet", "nocturne", "etude", "étude", "prelude",
    "mazurka", "polonaise", "lullaby", "hymn", "mass", "motet", "madrigal", "symphony", "concerto", "gigue",
    "sarabande", "gavotte", "toccata", "serenade", "requiem", "lied", "song", "dance", "ballade", "scherzo",
)  # fmt: skip
#: mood word → (descriptor, sign): "sad" claims low valence, "calm" low arousal.
MOODS: dict[str, tuple[str, int]] = {
    **dict.fromkeys(("sad", "melancholy", "melancholic", "mournful", "gloomy", "sorrowful", "tragic", "somber", "sombre", "funeral", "dark and brooding", "brooding"), ("valence", -1)),
    **dict.fromkeys(("happy", "joyful", "cheerful", "bright and happy", "jubilant", "merry", "playful", "sunny", "upbeat", "triumphant"), ("valence", 1)),
    **dict.fromkeys(("calm", "peaceful", "serene", "tranquil", "gentle", "relaxed", "soothing", "subdued", "quiet and still"), ("arousal", -1)),
    **dict.fromkeys(("energetic", "lively", "agitated", "intense", "exciting", "driving", "frantic", "vigorous", "restless", "tense"), ("arousal", 1)),
}  # fmt: skip
#: How far a measured valence/arousal (in [-1, 1]) must be on the other side to contradict a mood
#: word, and on its side to support it; in between the word is unverified.
MOOD_CONTRADICT, MOOD_SUPPORT = 0.2, 0.05
_TEMPO_TOLERANCE = 0.12  # trackers confuse half/double time; within 12 % of any of them is supported

_CITE = re.compile(r"\[(\d{1,3})\]")
_KEY = re.compile(r"\b([A-G](?:#|♯|b|♭)?)(?:[ -](sharp|flat))?[ -](major|minor)\b")
_MODE = re.compile(
    r"\b(?:an?|the|in)\s+(major|minor)(?:[ -](?:key|mode|tonality))\b|\b(major|minor)-key\b", re.I
)
_BPM = re.compile(r"\b(\d{2,3}(?:\.\d)?)\s*(?:BPM|bpm|beats per minute)\b")
_YEAR = re.compile(
    r"\b(?:in|of|from|around|circa|c\.)\s+(1[0-9]{3}|20[0-2][0-9])\b|\b(1[0-9]{3}|20[0-2][0-9])s?\b"
)
_METER = re.compile(r"\b(?:in\s+)?(\d{1,2}/(?:2|4|8|16))(?:\s+time)?\b")
_PLACE = re.compile(r"\b(?:in|at|from)\s+((?:[A-Z][a-zà-ÿ]{2,})(?:\s+[A-Z][a-zà-ÿ]{2,})?)\b")


@dataclass(frozen=True)
class Claim:
    kind: str  # key, mode, tempo, mood, composer, era, year, instrument, form, meter, place
    text: str  # the words of the claim, as written
    start: int  # span in the checked text
    end: int
    verdict: str  # SUPPORTED | CONTRADICTED | UNVERIFIED
    measured: str = ""  # what the facts say, for a contradicted claim

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def strip_markers(text: str) -> str:
    return _MARKERS.sub("", text)


# --- citations -----------------------------------------------------------------------------------------

#: Sentence ends (not after an initial: "W. A. Mozart"), semicolons, ", and"/", but" join clauses.
_SENTENCE_END = r"(?:(?<=[A-Za-z]{2}[.!?])|(?<=[0-9\])\"”'][.!?]))\s+"
_CLAUSE = re.compile(rf"{_SENTENCE_END}|\s*;\s*|,\s+(?=(?:and|but|while|whereas|whilst)\b)")


def _clauses(text: str) -> list[tuple[int, int]]:
    """(start, end) spans of the clauses of ``text``."""
    spans, pos = [], 0
    for m in _CLAUSE.finditer(text):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    return [(a, b) for a, b in spans if b > a]


def drop_bad_citations(text: str, ranks: set[int]) -> tuple[str, list[int]]:
    """Citations of results that do not exist removed with their clause, so no fragment is left.

    A clause that also cites real results keeps them and loses only the bad number (and the "and"
    joining it). Returns the text and the removed numbers.
    """
    removed: list[int] = []
    out: list[str] = []
    last = 0
    for a, b in _clauses(text):
        clause = text[a:b]
        cited = [int(n) for n in _CITE.findall(clause)]
        bad = [n for n in cited if n not in ranks]
        if bad:
            removed += bad
            if len(bad) == len(cited):
                out.append(text[last:a])
                last = b
                continue
            for n in bad:
                clause = re.sub(rf"\s*(?:,|and|&)?\s*\[{n}\](?:\s*(?:,|and)(?=\s*\[))?", "", clause)
        out.append(text[last:a] + clause)
        last = b
    out.append(text[last:])
    cleaned = "".join(out)
    cleaned = re.sub(r"\s*[;,]\s*(?=[.!?]|$)", "", cleaned)  # a clause dropped after ";": end the sentence
    cleaned = re.sub(r"(^|[.!?]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), cleaned.strip())
    cleaned = re.sub(r"[ \t]{2,}", " ", cleaned)
    cleaned = re.sub(r"\s+([.,;:!?])", r"\1", cleaned)
    if cleaned and cleaned[-1] not in ".!?":
        cleaned += "."
    return cleaned, removed


# --- claims --------------------------------------------------------------------------------------------


def _subjects(
    clause: str, results: Mapping[int, Mapping[str, Any]], query: Mapping[str, Any]
) -> list[tuple[str, Mapping[str, Any], Mapping[str, Any]]]:
    """(who, descriptors, metadata) of what a clause is about: its cited results, else the query."""
    cited = [int(n) for n in _CITE.findall(clause) if int(n) in results]
    if cited:
        return [(f"[{n}]", results[n].get("descriptors") or {}, results[n]) for n in dict.fromkeys(cited)]
    return [("the query", query, query)]


def _words(meta: Mapping[str, Any]) -> str:
    return " ".join(str(meta.get(f) or "") for f in ("title", "work")).lower()


def _verdict_any(checks: Sequence[tuple[str, bool | None, str]]) -> tuple[str, str]:
    """Several subjects: supported if any supports; contradicted if all that know contradict."""
    known = [c for c in checks if c[1] is not None]
    if any(ok for _, ok, _ in known):
        return SUPPORTED, ""
    if known:
        return CONTRADICTED, ", ".join(f"{who}: {value}" for who, _, value in known)
    return UNVERIFIED, ""


def _mood_check(word: str, d: Mapping[str, Any]) -> tuple[bool | None, str]:
    axis, sign = MOODS[word]
    v = d.get(axis)
    if not isinstance(v, int | float):
        return None, ""
    value = f"{axis} {v:+.2f}"
    if sign * v >= MOOD_SUPPORT:
        return True, value
    if sign * v <= -MOOD_CONTRADICT:
        return False, value
    return None, value


def _form_check(word: str, meta: Mapping[str, Any], vocabulary: Sequence[str]) -> tuple[bool | None, str]:
    words = _words(meta)
    if re.search(rf"\b{re.escape(word)}s?\b", words):
        return True, ""
    named = [w for w in vocabulary if re.search(rf"\b{re.escape(w)}s?\b", words)]
    return (False, "title: " + str(meta.get("title") or meta.get("work"))) if named else (None, "")


def find_claims(text: str, response: Mapping[str, Any]) -> list[Claim]:
    """Every claim in ``text`` (already cleaned of bad citations) with its verdict."""
    results = {int(r["rank"]): r for r in response.get("results") or []}
    query = response.get("query") or {}
    library = [str(r.get("composer")) for r in results.values() if r.get("composer")]
    vocabulary = list(dict.fromkeys([*library, *KNOWN_COMPOSERS]))
    found: list[Claim] = []
    sentence_starts = [0, *(m.end() for m in re.finditer(_SENTENCE_END, text))]
    for a, b in _clauses(text):
        clause = text[a:b]
        if not _CITE.search(clause):  # "…, and it was written in Vienna": the sentence's results
            start = max(s for s in sentence_starts if s <= a)
            end = min([s for s in sentence_starts if s > a] + [len(text)])
            clause_for_subject = text[start:end]
        else:
            clause_for_subject = clause
        found += _clause_claims(clause, a, _subjects(clause_for_subject, results, query), vocabulary)
    return sorted(found, key=lambda c: c.start)


def _clause_claims(
    clause: str,
    a: int,
    subjects: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
    vocabulary: Sequence[str],
) -> list[Claim]:
    """The claims of one clause (``a``: where it starts in the text), checked against its subjects."""
    claims: list[Claim] = []
    taken: list[tuple[int, int]] = []

    def add(kind: str, m_start: int, m_end: int, verdict: str, measured: str = "") -> None:
        if any(m_start < y and x < m_end for x, y in taken):
            return
        taken.append((m_start, m_end))
        claims.append(Claim(kind, clause[m_start:m_end], a + m_start, a + m_end, verdict, measured))

    for m in _KEY.finditer(clause):
        p = describe.pitch_index(m.group(1) + {"sharp": "#", "flat": "b"}.get(m.group(2) or "", ""))
        claim = (p, m.group(3).lower())
        checks = []
        for who, d, _ in subjects:
            k = describe.key_of(d)
            checks.append(
                (
                    who,
                    None if k is None else k == claim,
                    f"{KEY_NAMES[k[0]]} {k[1]}" if k else "",
                )
            )
        add("key", m.start(), m.end(), *_verdict_any(checks))
    for m in _MODE.finditer(clause):
        mode = (m.group(1) or m.group(2)).lower()
        checks = []
        for who, d, _ in subjects:
            k = describe.key_of(d)
            checks.append((who, None if k is None else k[1] == mode, f"{k[1]} mode" if k else ""))
        add("mode", m.start(), m.end(), *_verdict_any(checks))
    for m in _BPM.finditer(clause):
        bpm = float(m.group(1))
        checks = []
        for who, d, _ in subjects:
            t = describe.tempo(d)
            ok = None if not t else any(abs(bpm - x) <= _TEMPO_TOLERANCE * x for x in (t, 2 * t, t / 2))
            checks.append((who, ok, f"{t:.0f} BPM" if t else ""))
        add("tempo", m.start(), m.end(), *_verdict_any(checks))
    for m in _METER.finditer(clause):
        add("meter", m.start(), m.end(), UNVERIFIED)  # meter is not measured
    for mention in composer_names.find_mentions(clause, vocabulary):
        span = _span_of(clause, mention.said)
        if span is None:
            continue
        checks = []
        for who, _, meta in subjects:
            c = str(meta.get("composer") or "")
            checks.append((who, (c in mention.names) if c else None, c))
        add("composer", *span, *_verdict_any(checks))
    for era in ERAS:
        for m in re.finditer(rf"\b{era}\b", clause):
            checks = [
                (
                    who,
                    (str(meta.get("era")) == era) if meta.get("era") else None,
                    str(meta.get("era") or ""),
                )
                for who, _, meta in subjects
            ]
            add("era", m.start(), m.end(), *_verdict_any(checks))
    for m in _YEAR.finditer(clause):
        year = int(m.group(1) or m.group(2))
        checks = []
        for who, _, meta in subjects:
            if meta.get("year"):
                checks.append((who, abs(int(meta["year"]) - year) <= 1, f"year {meta['year']}"))
            elif meta.get("era") in ERA_YEARS:
                lo, hi = ERA_YEARS[str(meta["era"])]
                # Inside the era's years the data cannot confirm the year itself: unverified.
                checks.append(
                    (who, None if lo - 10 <= year < hi + 10 else False, f"{meta['era']} ({lo}–{hi})")
                )
        add("year", m.start(), m.end(), *_verdict_any(checks))
    for word in sorted(MOODS, key=len, reverse=True):
        for m in re.finditer(rf"\b{re.escape(word)}\b", clause, re.I):
            checks = [(who, *_mood_check(word, d)) for who, d, _ in subjects]
            verdict, measured = _verdict_any(checks)
            add("mood", m.start(), m.end(), verdict, measured)
    for kind, vocab in (("instrument", INSTRUMENTS), ("form", FORMS)):
        for word in sorted(vocab, key=len, reverse=True):
            for m in re.finditer(rf"\b{re.escape(word)}s?\b", clause, re.I):
                checks = [(who, *_form_check(word, meta, vocab)) for who, _, meta in subjects]
                add(kind, m.start(), m.end(), *_verdict_any(checks))
    for m in _PLACE.finditer(clause):
        place = m.group(1)
        if (
            place in ERAS
            or describe.pitch_index(place.split()[0]) is not None
            or place.split()[0] in {"The", "This", "Its", "Markdown"}
        ):
            continue
        if composer_names.find_mentions(place, vocabulary) or any(
            place.lower() in _words(meta) for _, _, meta in subjects
        ):
            continue
        add("place", m.start(1), m.end(1), UNVERIFIED)

    return claims


def _span_of(clause: str, said: str) -> tuple[int, int] | None:
    """The span of a normalized composer form in the original clause ("J.S. Bach" for "j s bach")."""
    words = said.split()
    pattern = r"[\s.\-]*".join(re.escape(w) for w in words)
    m = re.search(rf"(?<!\w){pattern}(?!\w)", clause, re.I)
    if m is None and len(words) > 1:  # initials written together: "JS Bach"
        m = re.search(
            rf"(?<!\w){re.escape(''.join(words[:-1]))}[\s.\-]*{re.escape(words[-1])}(?!\w)", clause, re.I
        )
    return (m.start(), m.end()) if m else None


def mark(text: str, claims: Sequence[Claim]) -> str:
    """``text`` with each contradicted or unverified claim wrapped in markers (see :func:`to_markdown`)."""
    out, pos = [], 0
    for c in claims:
        if c.verdict == SUPPORTED or c.start < pos:
            continue
        out.append(text[pos : c.start])
        if c.verdict == CONTRADICTED:
            out.append(f"{CONTRA_OPEN}{c.text}{NOTE}measured {c.kind}: {c.measured}{CLOSE}")
        else:
            out.append(f"{UNVER_OPEN}{c.text}{CLOSE}")
        pos = c.end
    out.append(text[pos:])
    return "".join(out)


def to_markdown(marked: str) -> str:
    """Plain Markdown for API clients: ~~claim~~ (measured: …), claim (unverified)."""
    text = re.sub(f"{CONTRA_OPEN}(.*?){NOTE}(.*?){CLOSE}", r"~~\1~~ (\2)", marked)
    return strip_markers(re.sub(f"{UNVER_OPEN}(.*?){CLOSE}", r"\1 (unverified)", text))


def to_html(rendered: str) -> str:
    """Markers in rendered (escaped) HTML → the claim struck with its measured value, or tagged unverified."""
    html = re.sub(
        f"{CONTRA_OPEN}(.*?){NOTE}(.*?){CLOSE}",
        r'<s class="claim contradicted">\1</s> <span class="flag contradiction">(does not match the \2)</span>',
        rendered,
    )
    html = re.sub(
        f"{UNVER_OPEN}(.*?){CLOSE}",
        r'<span class="claim unverified">\1</span> <span class="unverified">(unverified)</span>',
        html,
    )
    return strip_markers(html)
