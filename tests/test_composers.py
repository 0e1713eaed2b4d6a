"""Composer names matched by whole names (issue 20, item 6): shared words, initials, aliases, ambiguity."""

from __future__ import annotations

from assistant.composers import find_mentions, name_forms, split_by_negation
from assistant.rules import ambiguous_composers, parse_rules

BACHS = ["Johann Sebastian Bach", "Carl Philipp Emanuel Bach", "Wolfgang Amadeus Mozart"]
SHARED_WORD = ["Alpha Composer", "Beta Composer", "Gamma Composer"]


def test_a_shared_word_does_not_exclude_every_composer_with_it():
    fu = parse_rules("not by Alpha Composer", composers=SHARED_WORD)
    assert fu.exclude_composers == ("Alpha Composer",) and fu.only_composers == ()


def test_initials_pick_the_right_bach():
    assert parse_rules("only C. P. E. Bach", composers=BACHS).only_composers == ("Carl Philipp Emanuel Bach",)
    assert parse_rules("only CPE Bach", composers=BACHS).only_composers == ("Carl Philipp Emanuel Bach",)
    for said in ("only J.S. Bach", "only JS Bach", "only Johann Sebastian Bach", "only J. S. Bach"):
        assert parse_rules(said, composers=BACHS).only_composers == ("Johann Sebastian Bach",), said


def test_a_surname_shared_by_two_composers_is_asked_about_not_guessed():
    fu = parse_rules("only Bach", composers=BACHS)
    assert fu.only_composers == () and fu.exclude_composers == ()
    assert ambiguous_composers("only Bach", BACHS) == [
        ("bach", ("Carl Philipp Emanuel Bach", "Johann Sebastian Bach"))
    ]
    # With one Bach in the library, the surname is enough.
    assert parse_rules("only Bach", composers=BACHS[:1]).only_composers == ("Johann Sebastian Bach",)


def test_aliases_and_lists_under_one_negation():
    lib = ["George Frideric Handel", "Pyotr Ilyich Tchaikovsky", *BACHS]
    wanted, excluded = split_by_negation("no Händel, Tschaikowsky or Mozart, only J.S. Bach", lib)
    assert [m.names[0] for m in excluded] == [
        "George Frideric Handel", "Pyotr Ilyich Tchaikovsky", "Wolfgang Amadeus Mozart",
    ]  # fmt: skip
    assert [m.names[0] for m in wanted] == ["Johann Sebastian Bach"]


def test_forms_are_whole_names():
    forms = name_forms("Ludwig van Beethoven")
    assert {"ludwig van beethoven", "van beethoven", "beethoven", "l van beethoven"} <= forms
    assert all(m.names != ("Alpha Composer",) for m in find_mentions("any composer", SHARED_WORD))
