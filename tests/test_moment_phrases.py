"""Moments and paths named in a message (assistant/moment_phrases.py)."""

from __future__ import annotations

from assistant.moment_phrases import DEFAULT_PATH_STEPS, parse_moments, parse_path


def test_several_named_moments():
    assert parse_moments("find moments like 0:30 of Lindenbaum and 0:41 of maple_leaf_rag") == [
        (30.0, "Lindenbaum"),
        (41.0, "maple_leaf_rag"),
    ]
    assert parse_moments('find moments like 1:23 of "Chorale 12"?') == [(83.0, "Chorale 12")]


def test_a_path_between_two_results_is_understood():
    assert parse_path("a path from #1 to #4") == (1, 4, DEFAULT_PATH_STEPS)
    assert parse_path("Make a 7-step path from 2 to 3 please") == (2, 3, 7)
    assert parse_path("path from #3 towards #1 in 4 steps") == (3, 1, 4)
    assert parse_path("a path of 6 moments from #2 to #5") == (2, 5, 6)
    assert parse_path("more like #2 but not #3") is None
    assert parse_path("only Baroque") is None
