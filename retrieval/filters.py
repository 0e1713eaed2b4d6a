"""Search filters as SQL: the WHERE clause over ``segments s JOIN tracks t`` that every route shares."""

from __future__ import annotations

from typing import Any

from cadenza.errors import InputError
from retrieval.descriptors import key_index
from retrieval.types import Filters


def filter_sql(
    filters: Filters, *, model_version: str, extra_exclude: tuple[int, ...] = ()
) -> tuple[str, list[Any]]:
    """A WHERE clause (over ``segments s JOIN tracks t``) and its parameters."""
    where = ["s.model_version = %s"]
    params: list[Any] = [model_version]

    def lower(xs: tuple[str, ...]) -> list[str]:
        return [x.strip().lower() for x in xs if x and x.strip()]

    for col, inc, exc in (
        ("t.composer", filters.composers, filters.exclude_composers),
        ("t.work", filters.works, filters.exclude_works),
        ("t.era", filters.eras, filters.exclude_eras),
    ):
        if lower(inc):
            where.append(f"lower({col}) = ANY(%s)")
            params.append(lower(inc))
        if lower(exc):
            where.append(f"lower({col}) <> ALL(%s)")
            params.append(lower(exc))
    if filters.tracks:
        where.append("s.track_id = ANY(%s)")
        params.append(list(filters.tracks))
    excluded = sorted(set(filters.exclude_tracks) | set(extra_exclude))
    if excluded:
        where.append("s.track_id <> ALL(%s)")
        params.append(excluded)
    if filters.key:
        try:
            where.append("s.key_index = %s")
            params.append(key_index(filters.key))
        except ValueError:
            raise InputError(f"key {filters.key!r} is not a note name; use C, C#, Db … B") from None
    if filters.mode:
        if filters.mode not in ("major", "minor"):
            raise InputError(f"mode {filters.mode!r} must be 'major' or 'minor'")
        where.append("s.mode = %s")
        params.append(filters.mode)
    if filters.min_bpm is not None:
        where.append("s.tempo_bpm >= %s")
        params.append(float(filters.min_bpm))
    if filters.max_bpm is not None:
        where.append("s.tempo_bpm <= %s")
        params.append(float(filters.max_bpm))
    return " AND ".join(where), params
