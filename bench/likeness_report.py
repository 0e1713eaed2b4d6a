"""The report of ``cadenza bench likeness`` (bench/likeness.py measures; this writes its notes and tables)."""

from __future__ import annotations

import os
from collections.abc import Sized
from typing import Any

from bench.memsearch import Library
from bench.metrics import HIT_TOLERANCE_S
from bench.real_sources import Sources
from bench.report import Report, machine_info, md_table


def likeness_report(
    src: Sources,
    lib: Library,
    lib_info: dict[str, Any],
    base: dict[str, float],
    queries: Sized,
    same_rows: list[dict[str, Any]],
    stem_rows: list[dict[str, Any]],
    refind_rows: list[dict[str, Any]],
    timings: dict[str, Any],
    notes: list[str],
    *,
    seed: int,
    max_seconds: float | None,
    n_queries: int,
    elapsed: float,
) -> Report:
    """The likeness report: notes on the library and the queries, then tables (a), (b) and (c)."""
    report = Report(name="likeness", title="Likeness: other music that sounds alike, on real recordings",
                    machine=machine_info())  # fmt: skip
    report.data = {
        "library": lib_info,
        "same_source": {**base, "queries": len(queries), "rows": same_rows},
        "cross_stem": stem_rows,
        "refind": refind_rows,
        "timings": timings,
        "seed": seed,
    }
    load = os.getloadavg()
    minutes = lib_info["minutes_used"]
    cap = f"the first {max_seconds:.0f} s of each" if max_seconds else "whole tracks"
    report.notes += [
        f"Library: {len(src.tracks)} real tracks from {len(src.counts())} sources (Debian packages, one folder each, "
        f"fetched by scripts/fetch_real_music.sh), {cap}: {minutes:.0f} min used of "
        f"{lib_info['minutes_full']:.0f} min; {lib.n_segments} windows of 10 s every 2 s. Fret-on-Fire songs are "
        f"their full mix (guitar + backing stems). {len(src.skipped)} files skipped (undecodable or under 25 s).",
        f"Every source here is held out of training whole ({', '.join(sorted(src.counts()))}); encoders trained "
        "with `cadenza corpus build --real` heard only the other sources (encoder/MODEL_CARD.md). No reserved package (wesnoth-*, hyperrogue-music, warzone2100-music, fb-music-high, "
        "drascula-music, asc-music, nexuiz-music, singularity-music) is used.",
        f"(a) {len(queries)} queries (2 per track; the one-aspect product rows: the first query of every other "
        f"track). Chance {base['chance']:.3f}, ceiling {base['ceiling']:.3f}; query composer's other tracks: chance "
        f"share {base['composer_chance']:.3f}.",
        f"(b), (c): in memory (exact cosine) and, in the `cadenza (product search)` rows, through the product; hit = "
        f"right track and |Δt| ≤ {HIT_TOLERANCE_S} s; {n_queries} queries per distortion from random tracks at random "
        "offsets (the product rows drop queries of a track the ingest skipped).",
        f"Run took {elapsed / 60:.1f} min on a machine shared with other work (load average {load[0]:.1f} / "
        f"{load[1]:.1f} / {load[2]:.1f}); only quality numbers are reported, no timings.",
        *notes,
    ]
    _sections(report, base, same_rows, stem_rows, refind_rows)
    return report


def _sections(
    report: Report,
    base: dict[str, float],
    same: list[dict[str, Any]],
    stems: list[dict[str, Any]],
    refind: list[dict[str, Any]],
) -> None:
    rows = [[r["system"], r.get("aspect", ""), r["path"], r.get("queries", ""), r["p_at_10"], r.get("composer_share", ""),
             r.get("likeness_same_source", ""), r.get("likeness_other_source", "")] for r in same]  # fmt: skip
    rows.append(["chance", "", "", "", base["chance"], base["composer_chance"], "", ""])
    rows.append(["ceiling", "", "", "", base["ceiling"], "", "", ""])
    report.section(
        "(a) Same-source P@10 (own track excluded, one result per track)",
        md_table(
            [
                "system",
                "aspect measured",
                "path",
                "queries",
                "same-source P@10",
                "query composer's share",
                "shown likeness, same source",
                "shown likeness, other sources",
            ],
            rows,
        ),  # fmt: skip
    )
    if stems:
        report.section(
            "(b) Cross-stem: a stem alone finds the passage in the full mix",
            md_table(
                ["stem", "system", "queries", "top-1", "top-10", "right song top-1"],
                [
                    [r["stem"], r["system"], r["queries"], r["top1"], r["top10"], r.get("work_top1", "")]
                    for r in stems
                ],
            ),  # fmt: skip
        )
    systems = list(dict.fromkeys(r["system"] for r in refind))
    labels = list(dict.fromkeys(r["distortion"] for r in refind))
    cell = {(r["distortion"], r["system"]): r["top1"] for r in refind}
    report.section(
        "(c) Passage re-finding top-1 per distortion",
        md_table(["distortion", *systems], [[d, *(cell.get((d, s), "") for s in systems)] for d in labels]),
    )
    for key, title in (
        ("work_top1", "(c) The right track first, at any time in it (a miss above that is a wrong moment)"),
        ("top1_rep", "(c) Top-1 with a literal repeat of the passage counted (mel frames correlate >= 0.97)"),
    ):
        cell = {(r["distortion"], r["system"]): r.get(key, "") for r in refind}
        report.section(
            title,
            md_table(
                ["distortion", *systems], [[d, *(cell.get((d, s), "") for s in systems)] for d in labels]
            ),
        )
    _cited_section(report, refind)


def _cited_section(report: Report, refind: list[dict[str, Any]]) -> None:
    """The product's rows: the true moment cited through "also plays at", beside strict top-1."""
    cited = [r for r in refind if "cited" in r]
    if cited:
        report.section(
            '(c) The true moment cited: the first result\'s time or one of its "also plays at" times '
            "(product only; strict top-1 above stays the headline)",
            md_table(
                [
                    "distortion",
                    "system",
                    "queries",
                    "strict top-1",
                    "true moment cited (first result's time or its also-at)",
                    "also-at times given",
                    "also-at precision (literal repeat or the true place)",
                ],
                [
                    [
                        r["distortion"],
                        r["system"],
                        r["queries"],
                        r["top1"],
                        r["cited"],
                        r["also_n"],
                        ""
                        if r["also_precision"] is None
                        else f"{r['also_precision']:.3g} ({r['also_ok']}/{r['also_n']})",
                    ]
                    for r in cited
                ],
            ),  # fmt: skip
        )
