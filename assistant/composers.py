"""Composer names in a chat message, matched by whole names against the library's composers.

A listener writes "Bach", "J.S. Bach", "JS Bach", "Johann Sebastian Bach" or "C. P. E. Bach"; the
library stores one full name per composer. Each stored name gets its whole-name forms (the full
name, initials + surname, the surname alone) plus the few spellings in :data:`ALIASES`. A form is
matched as a whole run of words, longest first, so "Alpha Composer" never matches "Beta Composer"
through their shared word, and "C. P. E. Bach" never selects Johann Sebastian Bach. A form that fits
several stored names ("Bach" in a library with two Bachs) is reported as ambiguous, to be asked
about, never guessed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

#: Spellings no rule derives: other transliterations, umlauts written out, common short forms.
#: Keys and values are whole names; a key applies only when its value is a library composer.
ALIASES: dict[str, str] = {
    "handel": "George Frideric Handel",
    "haendel": "George Frideric Handel",
    "tchaikovsky": "Pyotr Ilyich Tchaikovsky",
    "tschaikowsky": "Pyotr Ilyich Tchaikovsky",
    "chaikovsky": "Pyotr Ilyich Tchaikovsky",
    "rachmaninov": "Sergei Rachmaninoff",
    "mendelssohn": "Felix Mendelssohn",
    "palestrina": "Giovanni Pierluigi da Palestrina",
    "joplin": "Scott Joplin",
    "cpe bach": "Carl Philipp Emanuel Bach",
    "jsb": "Johann Sebastian Bach",
}

#: Words that are also a surname in some library ("Alpha Composer") but in a message mean the word:
#: such a surname alone never names a composer (the whole name still does).
COMMON_WORDS = {
    "composer", "composers", "music", "piece", "song", "songs", "major", "minor", "key", "band", "orchestra",
    "ensemble", "quartet", "choir", "unknown", "anonymous", "traditional", "various", "artist", "player",
    "sound", "mood", "more", "like", "this", "that", "same", "other",
}  # fmt: skip
#: Particles that are part of a surname ("da Palestrina", "van Beethoven", "de Machaut").
_PARTICLES = {"da", "de", "di", "van", "von", "der", "du", "la", "le"}


def normalize(text: str) -> str:
    """Lowercase, accents dropped, dots and hyphens as spaces: "J.-S. Bach" → "j s bach"."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = re.sub(r"[.\-‐–_]", " ", text)
    return " ".join(re.sub(r"[^\w#']+", " ", text).split())


def name_forms(name: str) -> set[str]:
    """The normalized whole-name forms a listener may write for the stored ``name``."""
    words = normalize(name).split()
    if not words:
        return set()
    forms = {" ".join(words)}
    # The surname, with its particles ("da palestrina", and "palestrina" alone).
    i = len(words) - 1
    while i > 0 and words[i - 1] in _PARTICLES:
        i -= 1
    surname = words[i:]
    given = words[:i]
    forms.add(" ".join(surname))
    forms.add(words[-1])
    if given and " ".join(surname) not in COMMON_WORDS:  # "a composer" is no initial + surname
        initials = [w[0] for w in given if w not in _PARTICLES]
        forms.add(" ".join([*initials, *surname]))  # "j s bach"
        forms.add(" ".join(["".join(initials), *surname]))  # "js bach"
        forms.add(" ".join([given[0], *surname]))  # "johann bach"
        forms.add(" ".join([given[-1], *surname]))  # "sebastian bach", "amadeus mozart"
    return {f for f in forms if (len(f) >= 3 and f not in COMMON_WORDS) or " " in f} | {" ".join(words)}


@dataclass(frozen=True)
class Mention:
    """A run of words naming composers: ``names`` has one entry, or several when it is ambiguous."""

    start: int  # character span in the normalized text
    end: int
    said: str  # the words as normalized
    names: tuple[str, ...]

    @property
    def ambiguous(self) -> bool:
        return len(self.names) > 1


def _index(vocabulary: Sequence[str]) -> dict[str, set[str]]:
    index: dict[str, set[str]] = {}
    for name in vocabulary:
        for form in name_forms(name):
            index.setdefault(form, set()).add(name)
    by_norm = {normalize(n): n for n in vocabulary}
    for alias, target in ALIASES.items():
        if normalize(target) in by_norm:
            index.setdefault(normalize(alias), set()).add(by_norm[normalize(target)])
    # A form that is the complete name of one composer means that composer, even when it is also a
    # shorter form of another (library "Bach" and "Johann Sebastian Bach": "bach" is the former).
    for norm, name in by_norm.items():
        if norm in index:
            index[norm] = {name}
    return index


def find_mentions(text: str, vocabulary: Sequence[str]) -> list[Mention]:
    """Composer mentions in ``text`` (normalized), longest forms first, never overlapping."""
    norm = f" {normalize(text)} "
    index = _index(vocabulary)
    taken: list[tuple[int, int]] = []
    out: list[Mention] = []
    for form in sorted(index, key=lambda f: (-len(f.split()), -len(f))):
        for m in re.finditer(rf"(?<= ){re.escape(form)}(?= )", norm):
            if any(m.start() < b and a < m.end() for a, b in taken):
                continue
            taken.append((m.start(), m.end()))
            out.append(Mention(m.start(), m.end(), form, tuple(sorted(index[form]))))
    return sorted(out, key=lambda m: m.start)


_NEGATED_BEFORE = re.compile(
    r"\b(?:no|not|without|except|exclude|excluding|avoid|other than|anything but|nothing by|fewer|less"
    r"|leave out|skip|drop|remove|lose|ditch|get rid of|take out|minus)"
    r"(?: (?:by|from|any|more|of|composed by|written by|pieces by|music by))*\s*$"
)
_LIST_JOIN = re.compile(r"^\s*(?:,|or|and|nor|, or|, and|, nor)?\s*(?:by |from )?$")


def split_by_negation(text: str, vocabulary: Sequence[str]) -> tuple[list[Mention], list[Mention]]:
    """(wanted, excluded) mentions: "not by Bach or Mozart" excludes both, "only Bach" wants Bach."""
    norm = f" {normalize(text)} "
    wanted: list[Mention] = []
    excluded: list[Mention] = []
    prev_end = 0
    prev_negated = False
    for m in find_mentions(text, vocabulary):
        before = norm[prev_end : m.start]
        if _NEGATED_BEFORE.search(before):
            negated = True
        elif prev_end and _LIST_JOIN.match(before):
            negated = prev_negated  # a list continues: "not Bach, Handel or Mozart"
        else:
            negated = False
        (excluded if negated else wanted).append(m)
        prev_end, prev_negated = m.end, negated
    return wanted, excluded
