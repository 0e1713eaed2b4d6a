"""The quality benchmark's report: the must-reach targets, the tables, the notes and the plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.metrics import REPEAT_MIN_CORR
from bench.quality_real import sections as real_sections
from bench.quality_systems import CANDIDATE, CANDIDATE_PROBED, PROBED, SEARCH_PROBES
from bench.queries import AUGMENTATION_HELP, AUGMENTATIONS
from bench.report import Report, md_table, pyplot, save_plot
from retrieval.nearest import TRANSPOSED_PENALTY

LENGTHS = (3.0, 5.0, 10.0)


def library_notes(lib_info: dict[str, Any], *, sizes: dict[str, Any], seed: int, elapsed: float) -> list[str]:
    return [
        f"Library: {lib_info['works']} works ({lib_info['works_per_split']}), {lib_info['audio_minutes']} min, "
        f"{lib_info['segments']} segments of 10 s every 2 s; composers {', '.join(lib_info['composers'])}. "
        "Each work is its first "
        f"{lib_info['max_seconds_per_work']:.0f} s, rendered clean on its primary program (encoder.corpus_plan.plan_views). "
        f"{lib_info['works_in_rendered_corpus']} of the works are the rendered corpus' own test/heldout works "
        f"({lib_info['corpus'] or 'no corpus found'}); the others are works the same split rule "
        "(encoder.corpus_plan.split_of) keeps out of training but the corpus' hour cap left out.",
        "In-memory path (all systems): the product's leveling + features + 10-s/2-s windows, EXACT cosine over all "
        "segments, one result per track, start localized on the chroma (retrieval.localize) like search does; no reranker.",
        "Hit = right work and |Δt| ≤ 2.5 s of the query's true start; queries start at random (non-grid) offsets.",
        "'Counting literal repeats' (never in the strict columns): a result on the right work that starts "
        "within 2.5 s of a place where the score plays the query's passage again (median per-frame log-mel "
        f"correlation of the clean library track ≥ {REPEAT_MIN_CORR}; bench.metrics.literal_repeat) also counts: "
        "the two moments sound the same, so the clip alone cannot tell them apart.",
        f"Sizes: {sizes['passage_queries_per_cell']} queries per augmentation × length cell "
        f"({sizes['passage_queries_per_10s_cell']} for 10-s queries), "
        f"{sizes['cross_queries']} cross-instrument and {sizes['cross_queries']} melody "
        f"queries, {sizes['style_queries']} style queries; seed {seed}; run took {elapsed / 60:.1f} min.",
    ]


#: issue #3's "must reach" on 10-s queries: augmentation → minimum top-1
TARGETS_TOP1 = {
    "noise": 0.95,
    "eq": 0.95,
    "mp3": 0.95,
    "pitch+1": 0.90,
    "pitch-1": 0.90,
    "tempo+5": 0.90,
    "tempo-5": 0.90,
}


def _fmt(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.2f}"


def _targets(passage, cross, style, system: str = "cadenza") -> list[tuple[Any, ...]]:
    """One row per must-reach target: the trained system overall, on unseen works of trained
    composers (test) and on unseen composers (heldout), the best baseline, the target, met?"""
    others = [s for s in dict.fromkeys(r["system"] for r in passage) if not s.startswith("cadenza")]
    rows: list[tuple[Any, ...]] = []

    def row(
        what: str, cells: dict[str, dict], metric: str, target: float | None, better_than_baselines=False
    ):
        mine = cells.get(system)
        if mine is None:
            return
        base = max((cells[o][metric] for o in others if o in cells), default=float("nan"))
        goal = target if target is not None else base
        met = mine[metric] >= goal if not better_than_baselines else mine[metric] > base
        rep = mine.get(f"{metric}_rep")
        rows.append(
            (
                what,
                _fmt(mine[metric]),
                _fmt(mine.get(f"{metric}@test")),
                _fmt(mine.get(f"{metric}@heldout")),
                f"{mine.get('n@test', '')}/{mine.get('n@heldout', '')}",
                _fmt(base),
                f"≥ {target:.2f}" if target is not None else "> best baseline",
                "yes" if met else "no",
                _fmt(rep),
                "" if rep is None else ("yes" if rep >= goal else "no"),
            )
        )

    for kind, target in TARGETS_TOP1.items():
        cells = {r["system"]: r for r in passage if r["augmentation"] == kind and r["length_s"] == 10.0}
        row(f"re-find top-1, {kind}", cells, "top1", target)
    for query, target in (("other instrument", 0.85), ("melody only", 0.5)):
        row(f"{query}, top-10", {r["system"]: r for r in cross if r["query"] == query}, "top10", target)
    style_cells = {
        r["system"]: {
            "p": r["composer_p@10"],
            "p@test": r.get("composer_p@10@test", float("nan")),
            "p@heldout": r.get("composer_p@10@heldout", float("nan")),
        }
        for r in style
    }
    row("composer P@10 (other works)", style_cells, "p", None, better_than_baselines=True)
    return rows


def _target_headers(system: str) -> list[str]:
    """Columns of the rows :func:`_targets` makes for ``system``."""
    return [
        "target", system, "test", "heldout", "n test/heldout", "best baseline", "target", "met",
        "counting literal repeats", "met so",
    ]  # fmt: skip


def _passage_table(passage: list[dict[str, Any]], systems: list[str]) -> str:
    rows = []
    for kind in AUGMENTATIONS:
        for length in LENGTHS:
            cells = {r["system"]: r for r in passage if r["augmentation"] == kind and r["length_s"] == length}
            row: list[Any] = [kind, f"{length:.0f} s"]
            for s in systems:
                c = cells.get(s, {})
                row += [c.get("top1"), c.get("top10"), c.get("mrr")]
            rows.append(row)
    headers = ["augmentation", "query"] + [f"{s} {m}" for s in systems for m in ("top-1", "top-10", "MRR")]
    return md_table(headers, rows)


def _passage_summary(passage: list[dict[str, Any]], systems: list[str]) -> str:
    summary = []
    for s in systems:
        for sel in (*LENGTHS, None):
            rs = [
                r
                for r in passage
                if r["system"] == s and r["augmentation"] != "clean" and (sel is None or r["length_s"] == sel)
            ]
            summary.append(
                (
                    s,
                    "all" if sel is None else f"{sel:.0f} s",
                    *(
                        np.mean([r[m] for r in rs])
                        for m in ("top1", "top10", "mrr", "work_top1", "work_top10")
                    ),
                )
            )
    headers = [
        "system", "query", "top-1", "top-10", "MRR", "right work top-1 (any time)", "right work top-10 (any time)",
    ]  # fmt: skip
    return md_table(headers, summary)


def sections(report: Report, passage, cross, style, ceiling, chance, real) -> None:
    systems = list(dict.fromkeys(r["system"] for r in passage))
    for name in ("cadenza", CANDIDATE):
        if name in systems:
            report.section(
                f"Must-reach targets, {name} (issue #3; 10-s queries; test = unseen works of trained "
                "composers, heldout = composers never trained on)",
                md_table(_target_headers(name), _targets(passage, cross, style, system=name)),
            )
    for name in (PROBED, CANDIDATE_PROBED):
        if name in systems:
            report.section(
                f"Must-reach targets as search runs a clip ({name}: the query also moved "
                f"{', '.join(f'{s:+d}' for s in SEARCH_PROBES)} semitones, penalty {TRANSPOSED_PENALTY})",
                md_table(_target_headers(name), _targets(passage, cross, style, system=name)),
            )
    report.section("Passage re-finding (in-memory exact search)", _passage_table(passage, systems))
    report.section(
        "Augmentations",
        md_table(["name", "what"], [(k, AUGMENTATION_HELP[k]) for k in AUGMENTATIONS]),
    )
    report.section(
        "Passage re-finding, mean over the augmentations (clean excluded)", _passage_summary(passage, systems)
    )
    report.section(
        "Cross-instrument and melody-only queries (10 s, library on the primary instrument)",
        md_table(
            ["query", "system", "top-1", "top-10", "MRR", "n"],
            [(r["query"], r["system"], r["top1"], r["top10"], r["mrr"], r["n"]) for r in cross],
        ),
    )
    srows = [(r["system"], r["composer_p@10"], r["era_p@10"]) for r in style]
    srows.append(("ceiling (all relevant works first)", ceiling["composer"], ceiling["era"]))
    srows.append(("chance (random other works)", chance["composer"], chance["era"]))
    report.section(
        "Composer and era P@10 (relevant = same composer / era, OTHER works only; in-memory, no reranker)",
        md_table(["system", "composer P@10", "era P@10"], srows),
    )
    if real:
        for heading, body in real_sections(real):
            report.section(heading, body)


def plots(passage: list[dict[str, Any]], out_dir: Path) -> list[str]:
    plt = pyplot()
    systems = list(dict.fromkeys(r["system"] for r in passage))
    fig, axes = plt.subplots(1, len(LENGTHS), figsize=(4.2 * len(LENGTHS), 4), sharey=True)
    x = np.arange(len(AUGMENTATIONS))
    width = 0.8 / max(len(systems), 1)
    for ax, length in zip(np.atleast_1d(axes), LENGTHS, strict=True):
        for j, s in enumerate(systems):
            vals = [
                next(
                    (
                        r["top10"]
                        for r in passage
                        if r["system"] == s and r["augmentation"] == a and r["length_s"] == length
                    ),
                    np.nan,
                )
                for a in AUGMENTATIONS
            ]
            ax.bar(x + j * width - 0.4 + width / 2, vals, width, label=s)
        ax.set_xticks(x)
        ax.set_xticklabels(AUGMENTATIONS, rotation=45, ha="right")
        ax.set_title(f"{length:.0f}-s queries")
        ax.set_ylim(0, 1.02)
        ax.grid(axis="y", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("top-10 hit rate")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("Passage re-finding per augmentation (right work, |Δt| ≤ 2.5 s)")
    return [str(save_plot(fig, out_dir / "quality_per_augmentation.png"))]
