"""The rule-based parser: the common follow-up phrasings → a :class:`FollowUp`, without an LLM.

Pure functions over the message text and the library's vocabulary (composers, eras). Besides
:func:`parse_rules` this module says when a message was not understood (:func:`not_understood`),
and which composer names are ambiguous (:func:`ambiguous_composers`). Moments and paths named in a
message are :mod:`assistant.moment_phrases`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from assistant import composers as composer_names
from assistant.followup_schema import DIVERSITY_LESS, DIVERSITY_MORE, ERAS, MAX_K, FollowUp

_NUM_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "twelve": 12, "fifteen": 15, "twenty": 20,
}  # fmt: skip
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5,
    "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10,
}  # fmt: skip
#: An optional noun after "the second", which must end the phrase ("the first 5 results" is no rank).
_THING = r"(?:\s+(?:one|result|track|match|moment|piece))?(?=\s*(?:$|[,.!?;]|(?:and|but|or|please|too|instead|together)\b))"
#: "#3", "number 3", "result 3", "the third (one)", "the 3rd (result)".
_RANK = (
    r"(?:#\s*(\d+)|(?:number|no\.?|result)\s*(\d+)"
    rf"|\bthe\s+({'|'.join(_ORDINALS)}){_THING}\b|\bthe\s+(\d{{1,2}})(?:st|nd|rd|th){_THING}\b)"
)
#: Words that take results away: ranks after them are subtracted ("not #3", "drop the second").
_NEGATION = (
    r"\b(?:but not|not|except|without|unlike|less like|minus"
    r"|drop|remove|hide|skip|exclude|ditch|get rid of|take out|leave out|throw out|lose)\b"
)
#: The whole negated part is "this one" / "that result" / "it": the listener means the top result.
_THIS_ONE = rf"^\s*(?:the\s+)?(?:this|that|it){_THING}\s*(?:please)?\s*[.!?,]*\s*$"
_NOT = (
    r"(?:no|not|without|except|but not|exclude|avoid|nothing|anything but"
    r"|leave out|skip|drop|remove|lose|ditch|get rid of|take out|minus)"
)


def _ranks(fragment: str) -> list[int]:
    out = []
    for m in re.finditer(_RANK, fragment):
        if m.group(1) or m.group(2):
            out.append(int(m.group(1) or m.group(2)))
        elif m.group(3):
            out.append(_ORDINALS[m.group(3)])
        else:
            out.append(int(m.group(4)))
    return out


def _number(word: str) -> int:
    return int(word) if word.isdigit() else _NUM_WORDS[word]


# --- tempo -------------------------------------------------------------------------------------------

_BPM_UNIT = r"\s*(?:bpm|beats(?: per minute| a minute)?)"
_N = r"(\d{2,3}(?:\.\d+)?)"


def _tempo(t: str) -> tuple[str, float | None, float | None]:
    """(relative "any"/"slower"/"faster", min_bpm, max_bpm) from the lowered text."""
    lo = hi = None
    if m := re.search(rf"\b(?:between|from)\s+{_N}(?:{_BPM_UNIT})?\s+(?:and|to)\s+{_N}\b", t) or re.search(
        rf"\b{_N}\s*(?:-|–|to)\s*{_N}{_BPM_UNIT}", t
    ):
        lo, hi = sorted((float(m.group(1)), float(m.group(2))))
    else:
        # A bare "under 100" in a chat about music is a tempo: no other quantity here runs that high
        # (a count is "show 3", a time "0:30"); seconds, results and years are excluded.
        unit_or_tempo = rf"(?:{_BPM_UNIT}|(?!\s*(?:s\b|sec|seconds|minutes|results|moments|years|%|:)))"
        if m := re.search(
            rf"\b(?:under|below|less than|slower than|at most|no faster than|up to|max(?:imum)?(?: of)?)\s+{_N}{unit_or_tempo}",
            t,
        ):
            hi = float(m.group(1))
        if m := re.search(
            rf"(?<!no )(?<!not )\b(?:over|above|more than|faster than|at least|no slower than|min(?:imum)?(?: of)?)\s+{_N}{unit_or_tempo}",
            t,
        ):
            lo = float(m.group(1))
        if (
            lo is None
            and hi is None
            and (
                m := re.search(rf"\b(?:around|about|roughly|near|at)\s+{_N}{_BPM_UNIT}", t)
                or re.search(rf"\b{_N}{_BPM_UNIT}", t)
            )
        ):
            v = float(m.group(1))
            lo, hi = round(v * 0.9, 1), round(v * 1.1, 1)  # "around 100 bpm": ±10 %
    relative = "any"
    if lo is None and hi is None:
        if re.search(r"\b(slower|calmer tempo|less fast|more slowly|lower tempo)\b", t):
            relative = "slower"
        elif re.search(r"\b(faster|quicker|more upbeat|speedier|higher tempo)\b", t):
            relative = "faster"
    return relative, lo, hi


# --- keys and modes ----------------------------------------------------------------------------------

_ACCIDENTAL = {"#": "#", "♯": "#", "sharp": "#", "b": "b", "♭": "b", "flat": "b"}


def _key(text: str, t: str) -> tuple[str | None, str | None]:
    """(tonic, mode): "in D major" → ("D", "major"); "minor keys only" → (None, "minor")."""
    # The tonic letter is read from the original text: "in A minor" names a key, "in a minor key"
    # only a mode. Lowercase b-g before major/minor are keys too ("in d minor").
    m = re.search(
        r"(?<![\w#])([A-G]|[b-g])(?:\s*(#|♯|b|♭)|[\s-](sharp|flat))?[\s-]*(major|minor|maj|min)\b(?!\s+key\b)"
        r"|\bin\s+([A-G])(?:\s*(#|♯|b|♭)|[\s-](sharp|flat))?(?=\s*(?:$|[,.!?;]|\s(?:and|please|only|but)\b))",
        text,
    )
    mode = None
    tonic = None
    if m:
        letter = m.group(1) or m.group(5)
        acc = m.group(2) or m.group(3) or m.group(6) or m.group(7)
        tonic = letter.upper() + (_ACCIDENTAL[acc.lower()] if acc else "")
        mode_word = m.group(4)
        if mode_word:
            mode = "major" if mode_word.lower().startswith("maj") else "minor"
        if tonic in ("E#", "B#", "Fb", "Cb"):
            tonic = {"E#": "F", "B#": "C", "Fb": "E", "Cb": "B"}[tonic]
    if mode is None:
        for word, other in (("minor", "major"), ("major", "minor")):
            if re.search(rf"\b{_NOT}\s+(?:in\s+)?(?:a\s+)?{word}\b", t):
                mode = other
                break
            if re.search(rf"\b{word}\b", t) and not re.search(rf"\b{word}\s+(?:change|difference)", t):
                mode = word
                break
    return tonic, mode


# --- counts, aspects, diversity ----------------------------------------------------------------------

_COUNT_WORD = r"(\d{1,2}|" + "|".join(_NUM_WORDS) + r")"
#: After "top"/"first"/"show", "one" is a pronoun more often than a count ("drop the first one").
_COUNT_NOT_ONE = r"(\d{1,2}|" + "|".join(w for w in _NUM_WORDS if w != "one") + r")"


def _count(t: str) -> int | None:
    m = (
        re.search(
            rf"\b(?:show|give|find|list|get)?\s*(?:me\s+)?(?:just\s+|only\s+)?{_COUNT_WORD}\s+"
            r"(?:more\s+)?(?:results|moments|matches|options|tracks|pieces|of them)\b",
            t,
        )
        or re.search(
            rf"\b(?:show|give|list)\s+(?:me\s+)?(?:just\s+|only\s+)?(?:the\s+)?(?:top\s+)?{_COUNT_NOT_ONE}\b(?!\s*(?:bpm|:))",
            t,
        )
        or re.search(rf"\b(?:top|best|first)\s+{_COUNT_NOT_ONE}\b(?!\s*(?:bpm|:))", t)
        or re.search(rf"\b(?:only|just)\s+{_COUNT_WORD}\s*(?:please)?\s*[.!]*\s*$", t)
    )
    if not m:
        return None
    return max(1, min(MAX_K, _number(m.group(1))))


_TIMBRE = r"(?:timbre|sound|texture|instrumentation|instruments?|tone colou?r|the sound)"
_HARMONY = r"(?:harmony|harmonies|harmonic|chords?|progressions?|the harmony)"


def _emphasis(t: str) -> str:
    for aspect, word, other in (("timbre", _TIMBRE, _HARMONY), ("harmony", _HARMONY, _TIMBRE)):
        if re.search(
            rf"\b(?:focus(?:ing)?|concentrate|emphasi[sz]e|prioriti[sz]e|weight|stress|more weight)\s+(?:on\s+)?(?:the\s+)?(?:more\s+)?{word}\b"
            rf"|\b(?:more|stronger)\s+(?:about\s+)?(?:the\s+)?{word}\b|\b{word}\s+(?:over|before|rather than|more than)\b"
            rf"|\b{word}\s+matters?\s+more\b|\bcare\s+(?:more\s+)?about\s+(?:the\s+)?{word}\b"
            rf"|\bmatch\s+(?:the\s+)?{word}\b|\bsame\s+{word}\b.*\bany\s+{other}\b|\b{word}\s+first\b"
            rf"|\b(?:less|ignore|any|not the|forget)\s+(?:the\s+)?{other}\b",
            t,
        ):
            return aspect
    return "balanced"


def _diversity(t: str) -> float | None:
    if re.search(
        r"\b(?:same composer|one composer|same piece|same work|repeats?)\s+(?:is|are)\s+(?:fine|ok|okay|allowed|good)"
        r"|\b(?:less|no)\s+(?:variety|diversity)\b|\bless (?:varied|diverse)\b"
        r"|\b(?:don'?t|do not) mind (?:the )?same composer|\ballow (?:the )?same composer"
        r"|\b(?:fine|ok|okay) if (?:it'?s |they'?re )?(?:by )?the same composer",
        t,
    ):
        return DIVERSITY_LESS
    if re.search(
        r"\bmore\s+(?:variety|varied|diverse|diversity|different composers)\b|\bmix it up\b|\bvary (?:it|them)\b"
        r"|\b(?:a|more of a)\s+mix\b",
        t,
    ):
        return DIVERSITY_MORE
    return None


def _clear(t: str) -> tuple[str, ...]:
    out: list[str] = []
    if re.search(
        r"\b(?:clear|remove|reset|drop|forget)\s+(?:all\s+)?(?:the\s+)?(?:filters|constraints)\b|\bno filters\b"
        r"|\bfrom scratch\b",
        t,
    ):
        return ("all",)
    for part, words in (
        ("composers", r"composers?"),
        ("eras", r"eras?|periods?"),
        ("key", r"keys?|modes?|tonality"),
        ("tempo", r"tempo|speed|bpm"),
        ("mood", r"mood"),
    ):
        if re.search(
            rf"\bany\s+(?:{words})\b|\b(?:clear|drop|remove|forget|reset)\s+(?:the\s+)?(?:{words})(?: filter)?\b",
            t,
        ):
            out.append(part)
    return tuple(out)


# --- composers and eras ------------------------------------------------------------------------------


def ambiguous_composers(text: str, composers: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Names in ``text`` that fit several library composers: [("bach", (name, name)), …]."""
    return [(m.said, m.names) for m in composer_names.find_mentions(text, composers) if m.ambiguous]


def _eras(t: str, eras: Sequence[str]) -> tuple[list[str], list[str]]:
    only: list[str] = []
    excluded: list[str] = []
    for era in eras:
        e = re.escape(era.lower())
        if not re.search(rf"\b{e}\b", t):
            continue
        if re.search(rf"\b(?:{_NOT}|less|fewer)\s+(?:the\s+)?(?:any\s+)?(?:more\s+)?{e}\b", t) or re.search(
            rf"\b(?:{_NOT})\s+(?:any\s+)?(?:\w+\s+(?:or|nor|and)\s+){e}\b", t
        ):
            excluded.append(era)
        else:
            only.append(era)
    return only, excluded


def parse_rules(text: str, *, composers: Sequence[str] = (), eras: Sequence[str] = ERAS) -> FollowUp:
    """The common follow-up phrasings, without an LLM.

    ``composers``/``eras``: the library's vocabulary, so "only Bach" maps to the stored name. A
    composer name that fits several stored names is left out here (see :func:`ambiguous_composers`).
    """
    t = " " + re.sub(r"\s+", " ", text.lower()).strip() + " "
    like: list[int] = []
    unlike: list[int] = []
    # Split on negations: ranks after "not"/"but not"/"except"/"without" are subtracted.
    neg = re.split(_NEGATION, t, maxsplit=1)
    like.extend(_ranks(neg[0]))
    if len(neg) > 1:
        # "... not #3 and more like #4" — ranks after a later "like" are positive again.
        tail = re.split(r"\blike\b", neg[1], maxsplit=1)
        unlike.extend(_ranks(tail[0]) or ([1] if re.match(_THIS_ONE, tail[0]) else []))
        if len(tail) > 1:
            like.extend(_ranks(tail[1]))
    # "more like this" / "like this and #4 together": "this" is the last query, which is kept.
    keep_query = True
    if re.search(r"\b(only|just)\s+like\s+#?\d", t) or re.search(r"\binstead of (this|the query)\b", t):
        keep_query = False

    different_composer = bool(
        re.search(r"\b(different|another|other|new)\s+composers?\b", t)
        or re.search(r"\bnot (by )?the same composer\b", t)
    )
    unheard = bool(
        re.search(r"\b(haven'?t|have not|never|not yet)\s+(heard|listened)", t)
        or re.search(r"\b(unheard|unfamiliar|new to me|discover)", t)
    )
    if unheard:
        different_composer = False

    only_eras, exclude_eras = _eras(t, eras)
    wanted, excluded = composer_names.split_by_negation(text, composers)
    only_composers = [m.names[0] for m in wanted if not m.ambiguous]
    exclude_composers = [m.names[0] for m in excluded if not m.ambiguous]

    tempo, min_bpm, max_bpm = _tempo(t)
    key, mode = _key(text, t)
    same_mood = bool(
        re.search(r"\b(same|similar|this|that)\s+(mood|feel|feeling|vibe|emotion|atmosphere)\b", t)
    )
    mood_shift = None
    if re.search(r"\b(happier|more cheerful|brighter mood|more joyful|more upbeat mood|less sad)\b", t):
        mood_shift = "happier"
    elif re.search(r"\b(sadder|more melancholy|darker mood|more melancholic|less happy)\b", t):
        mood_shift = "sadder"
    elif re.search(r"\b(calmer|more relaxed|gentler|more peaceful|less energetic|softer mood)\b", t):
        mood_shift = "calmer"
    elif re.search(r"\b(more energetic|more intense|livelier|more exciting|wilder)\b", t):
        mood_shift = "more energetic"
    k = _count(t)
    if k is not None and k in like and re.search(rf"(?:#|number|result)\s*{k}\b", t):
        k = None  # "show #3" names a result, it is no count
    return FollowUp(
        like=tuple(dict.fromkeys(like)),
        unlike=tuple(dict.fromkeys(r for r in unlike if r not in like)),
        keep_query=keep_query,
        different_composer=different_composer,
        unheard_composers=unheard,
        only_composers=tuple(dict.fromkeys(only_composers)),
        exclude_composers=tuple(dict.fromkeys(exclude_composers)),
        only_eras=tuple(only_eras),
        exclude_eras=tuple(exclude_eras),
        same_mood=same_mood,
        mood_shift=mood_shift,
        tempo=tempo,
        mode=mode,
        emphasis=_emphasis(t),
        k=k,
        key=key,
        min_bpm=min_bpm,
        max_bpm=max_bpm,
        diversity=_diversity(t),
        clear=_clear(t),
    )


#: "start over": the chat answers with how to start a new search; it runs none.
START_OVER = re.compile(
    r"^\W*(?:let'?s\s+)?(?:start(?:\s+all)?\s+over|start again|new search|reset everything)\W*$", re.I
)

#: Messages that ask for the same search again on purpose ("more like this", "again").
_AGAIN = re.compile(
    r"\b(?:more like (?:this|that|it)|again|same again|similar|search again|refresh|more of (?:this|that|these))\b"
)


def not_understood(text: str, followup: FollowUp) -> bool:
    """True when the rules found nothing to change and the message does not ask for a repeat."""
    return followup.empty and not _AGAIN.search(text.lower())


#: What the rule parser understands, for the reply to a message it did not (kept short).
EXAMPLES = (
    "“like #2 but not #3”, “only Baroque”, “no Bach”, “in D major”, “minor keys only”, "
    "“between 60 and 90 bpm”, “under 100 bpm”, “faster”, “show 3”, “focus on timbre”, “more harmony”, "
    "“sadder”, “same composer is fine”, “more variety”, “any composer”, “clear the filters”, "
    "or a moment: “find moments like 0:30 of <title>”"
)


def interpret(
    text: str, *, composers: Sequence[str] = (), eras: Sequence[str] = ERAS, followup: FollowUp | None = None
) -> tuple[str, FollowUp | None]:
    """What the chat does with a follow-up message: ("ok", its FollowUp), or a refusal without a
    search: ("ambiguous", None) for a composer name that fits several, ("not_understood", …).

    ``followup``: what the language model made of the message (the rules parse it otherwise).
    """
    if ambiguous_composers(text, composers):
        return "ambiguous", None
    fu = followup if followup is not None else parse_rules(text, composers=composers, eras=eras)
    if not_understood(text, fu):
        return "not_understood", fu
    return "ok", fu
