"""The humming benchmark's report: per-condition tables, routing of ordinary clips, the library
line, and what the melody route costs."""

from __future__ import annotations

from typing import Any

from bench.humming_voices import DRIFT_CENTS, JITTER_S, QUERY_S
from bench.report import Report, machine_info, md_table


def _conditions_table(data: dict[str, Any], *, conditions: list[str], systems: tuple[str, ...]) -> str:
    routed = data["routed_to_melody"]
    table: list[list[Any]] = []
    for name in conditions:
        cells = [r for r in data["conditions"] if r["condition"] == name]
        if not cells:
            continue
        by = {r["system"]: r for r in cells}
        table.append(
            [name, cells[0]["n"], f"{routed[name]:.2f}"]
            + [f"{by[s]['top1']:.2f} / {by[s]['top10']:.2f} / {by[s]['mrr']:.2f}" for s in systems]
            + [f"{by[systems[0]]['work_top10']:.2f}"]
        )
    return md_table(
        ["condition", "n", "routed to melody", *systems, "search: right work anywhere, top-10"], table
    )


def _share(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _routing_table(data: dict[str, Any]) -> str:
    table = [
        [
            r["clip"],
            r["system"],
            r.get("routed_to_melody", "–"),
            f"{r['top1']:.2f}",
            f"{r['top10']:.2f}",
            r["n"],
        ]
        for r in data["ordinary_clips"]
    ]
    chords = data["chord_clips"]
    table.append(
        [
            "chord clips (bass + triads)",
            "search (auto route)",
            chords["routed_to_melody"],
            "–",
            "–",
            chords["n"],
        ]
    )
    return md_table(["clip", "system", "routed to melody", "top-1", "top-10", "n"], table)


def _line_table(acc: dict[str, Any]) -> str:
    comps = sorted({k.rsplit(" ", 1)[0] for k in acc["by_composer"]})
    return md_table(
        ["works", "previous line (cube root, decay 0.8)", "line stored now (square root, decay 0.9)"],
        [["all (" + str(acc["frames"]) + " frames)", acc["previous"], acc["now"]]]
        + [[c, acc["by_composer"][f"{c} previous"], acc["by_composer"][f"{c} now"]] for c in comps],
    )


def _cost_table(data: dict[str, Any]) -> str:
    cost = data["ingest_cpu_ms_per_audio_minute"]
    acc = data["line_accuracy"]
    ms = data["melody_search_ms"]
    rows: list[list[Any]] = [
        ["melodic line at ingest (CPU ms per minute of audio)", cost.get("melody", "–")],
        ["for scale: features (CPU ms per minute)", cost.get("features", "–")],
        [
            "melodic line alone, timed here (CPU ms per minute, now / previous)",
            f"{acc['cpu_ms_per_audio_minute']['now']} / {acc['cpu_ms_per_audio_minute']['previous']}",
        ],
        ["search as it runs a hum (ms, p50 / p95)", f"{ms.get('p50', 0):.0f} / {ms.get('p95', 0):.0f}"],
    ]
    for r in data["matcher_scaling"]:
        rows.append(
            [
                f"matcher alone, 10-s hum against {r['windows']:,} windows ({r['frames']:,} line frames), ms (median of {r['n']})",
                f"{r['ms']:.0f}",
            ]
        )
    return md_table(["what", "measured"], rows)


def write_report(
    data: dict[str, Any],
    *,
    conditions: list[str],
    systems: tuple[str, ...],
    n_per: int,
    elapsed: float,
    notes_md: list[str],
    postgres: str,
    pgvector: str,
) -> Report:
    """The :class:`Report` of one run (``data`` is what :func:`bench.humming.run_humming` measured)."""
    report = Report(
        name="humming",
        title="Humming: melody lines in other keys and tempi",
        machine=machine_info(postgres=postgres, pgvector=pgvector),
    )
    report.data = data
    lib = data["library"]
    report.notes += [
        f"Library: {lib['works']} held-out works ({lib['audio_minutes']} min, {lib['segments']} windows), "
        "rendered on their primary program and ingested for real.",
        f"{n_per} queries per condition, {QUERY_S:.0f} s each; drift up to ±{DRIFT_CENTS:.0f} cents, onset jitter "
        f"σ {JITTER_S * 1000:.0f} ms. A hit: right work, start within ±2.5 s. Wall time "
        f"{elapsed / 60:.1f} min on a shared machine; load average (1, 5, 15 min) at the start "
        f"{data['load_start']} and at the end {data['load_end']}.",
        *notes_md,
    ]
    report.section(
        "Per condition: top-1 / top-10 / MRR (passage: right work, ±2.5 s)",
        _conditions_table(data, conditions=conditions, systems=systems),
    )
    report.section(
        "Ordinary clips: what the automatic route does with them (the library's own renders, 10 s; chord clips)",
        _routing_table(data),
    )
    report.section(
        "The library's melodic line against the scores' top line (share of frames with its pitch class)",
        _line_table(data["line_accuracy"]),
    )
    report.section("Cost", _cost_table(data))
    return report
