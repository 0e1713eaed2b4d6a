"""``cadenza bench context``: how much each listening-context signal changes the top 10, on the demo library.

Queries are library moments of the demo library (``cadenza demo`` builds it; this benchmark builds it
first when it is missing), searched as the chat searches a named moment (own track left out), k = 10.
Per query, in one run:

- the **context-free** ranking: every switch off — the baseline;
- **time of day** at five local hours (one per day part): the signal alone, and the same request
  with its switch off;
- **history**: a listener who has played the composers of the baseline's first three results
  (the case history exists for); the signal alone, and switched off;
- **mood**: the target a "calmer" follow-up sets (the query's mood, arousal −0.5) at the follow-up's
  weight; alone, and switched off;
- **all three** on (22:30, that history, that mood).

Reported per row: the mean / least overlap of the top 10 with the context-free top 10 (shared
moments / 10), the share of queries whose top 10 changed at all, the mean number of ranks holding
another moment, the mean arousal and loudness of the top 10 against the baseline's (which way the
signal pushed), and whether switching the signal off gave the context-free results exactly (every
result field equal: ids, scores, components). The plays of the benchmark's listener are written
under a fresh listener id and deleted afterwards; nothing else in the library changes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import Report, db_versions, fmt, machine_info, md_table
from retrieval.context import DAY_PARTS, HISTORY_WEIGHT, TIME_OF_DAY_WEIGHT
from retrieval.store import record_play
from retrieval.types import Context, Filters, MomentRef, SearchRequest, SearchResponse, Weights

log = logging.getLogger(__name__)

K = 10
#: One local hour inside each day part (retrieval.context.DAY_PARTS).
HOURS = (2.0, 8.0, 14.0, 19.0, 22.5)
ALL_OFF = Context(time_of_day=False, history=False, mood=False)
#: The weight a mood follow-up sets (assistant.followups: max(weights.mood, 0.5)).
FOLLOWUP_MOOD_WEIGHT = 0.5


def _only(signal: str) -> Context:
    return replace(ALL_OFF, **{signal: True})


def _ids(resp: SearchResponse) -> list[int]:
    return [r.segment_id for r in resp.results]


def _results(resp: SearchResponse) -> list[dict[str, Any]]:
    return [asdict(r) for r in resp.results]


def _mean_desc(resp: SearchResponse, key: str) -> float:
    vals = [float(v) for r in resp.results if (v := r.descriptors.get(key)) is not None]
    return float(np.mean(vals)) if vals else float("nan")


class _Row:
    """Overlaps and exactness of one signal/condition over the queries."""

    def __init__(self, signal: str, condition: str) -> None:
        self.signal, self.condition = signal, condition
        self.overlap: list[float] = []
        self.changed_ranks: list[int] = []
        self.arousal: list[tuple[float, float]] = []  # (context-free, with the signal)
        self.loudness: list[tuple[float, float]] = []
        self.off_exact: list[bool] = []
        self.reported_ok: list[bool] = []

    def add(self, base: SearchResponse, on: SearchResponse, off: SearchResponse | None) -> None:
        a, b = _ids(base), _ids(on)
        self.overlap.append(len(set(a) & set(b)) / max(len(a), 1))
        self.changed_ranks.append(sum(1 for i in range(max(len(a), len(b))) if a[i : i + 1] != b[i : i + 1]))
        self.arousal.append((_mean_desc(base, "arousal"), _mean_desc(on, "arousal")))
        self.loudness.append((_mean_desc(base, "loudness_db"), _mean_desc(on, "loudness_db")))
        if off is not None:
            self.off_exact.append(_results(off) == _results(base))
        # The answer's own report (ranked again without the signal) must agree with the measured change.
        if self.signal != "all":
            row = next(s for s in on.query["context"]["signals"] if s["signal"] == self.signal)
            self.reported_ok.append(row["applied"] and row["changed_ranks"] == self.changed_ranks[-1])

    def to_json(self) -> dict[str, Any]:
        ov = np.asarray(self.overlap)
        ar, ld = np.asarray(self.arousal), np.asarray(self.loudness)
        return {
            "signal": self.signal,
            "condition": self.condition,
            "queries": len(self.overlap),
            "overlap_mean": float(ov.mean()),
            "overlap_min": float(ov.min()),
            "share_changed": float(np.mean(ov < 1.0) if len(ov) else 0.0),
            "share_reordered": float(np.mean(np.asarray(self.changed_ranks) > 0)),
            "changed_ranks_mean": float(np.mean(self.changed_ranks)),
            "arousal_top10": [float(np.nanmean(ar[:, 0])), float(np.nanmean(ar[:, 1]))],
            "loudness_db_top10": [float(np.nanmean(ld[:, 0])), float(np.nanmean(ld[:, 1]))],
            "off_exact": (sum(self.off_exact), len(self.off_exact)) if self.off_exact else None,
            "report_agrees": (sum(self.reported_ok), len(self.reported_ok)) if self.reported_ok else None,
        }


def _queries(conn: Any, model_version: str, n: int, seed: int) -> list[MomentRef]:
    """``n`` library moments: distinct tracks, a random segment of each (seeded)."""
    rows = conn.execute(
        "SELECT track_id, array_agg(start_s ORDER BY start_s) FROM segments WHERE model_version = %s"
        " GROUP BY track_id ORDER BY track_id",
        (model_version,),
    ).fetchall()
    rng = np.random.default_rng(seed)
    picks = rng.permutation(len(rows))[:n]
    return [MomentRef(int(rows[i][0]), float(rng.choice(rows[i][1]))) for i in sorted(picks)]


def _play(db: Any, listener: str, track_ids: list[int]) -> None:
    """Make ``track_ids`` the listener's only plays."""
    with db.connection() as conn:
        conn.execute("DELETE FROM plays WHERE listener_id = %s", (listener,))
        for tid in track_ids:
            record_play(conn, listener_id=listener, track_id=tid)
        conn.commit()


def _measure(
    ref: MomentRef, *, run: Callable[[SearchRequest], SearchResponse], db: Any, listener: str,
    row: Callable[[str, str], _Row],
) -> dict[str, float]:  # fmt: skip
    """Every signal for one query moment, each against the context-free baseline; the all-on timings."""
    plain = SearchRequest(
        moments=(ref,), k=K, filters=Filters(exclude_tracks=(ref.track_id,)), context=ALL_OFF
    )
    base = run(plain)
    # Time of day: the signal alone, and the same local time with its switch off.
    for hour in HOURS:
        part = next(p for p in DAY_PARTS if p.start_hour <= hour < p.end_hour)
        on = run(replace(plain, local_hour=hour, context=_only("time_of_day")))
        off = run(replace(plain, local_hour=hour))
        row("time_of_day", f"{part.name} ({hour:g} h)").add(base, on, off)
    # History: this listener has played the composers of the baseline's first three results.
    _play(db, listener, list(dict.fromkeys(r.track_id for r in base.results[:3])))
    with_listener = replace(plain, listener_id=listener)
    on = run(replace(with_listener, context=_only("history")))
    off = run(with_listener)
    row("history", "played the composers of the top 3").add(base, on, off)
    # Mood: what "calmer" sets.
    v, a = float(base.query.get("valence") or 0.0), float(base.query.get("arousal") or 0.0)
    target = (v, float(np.clip(a - 0.5, -1.0, 1.0)))
    moody = replace(plain, target_mood=target, weights=Weights(mood=FOLLOWUP_MOOD_WEIGHT))
    on = run(replace(moody, context=_only("mood")))
    off = run(moody)
    row("mood", "'calmer' (arousal −0.5)").add(base, on, off)
    # All three, and all three switched off.
    everything = replace(moody, listener_id=listener, local_hour=22.5)
    on = run(replace(everything, context=Context()))
    off = run(everything)
    row("all", "22:30 + history + calmer").add(base, on, off)
    return dict(on.timings_ms)


def _library_counts(conn: Any, model_version: str) -> dict[str, int]:
    from cadenza.db import scalar

    return {
        "tracks": scalar(conn, "SELECT count(*) FROM tracks"),
        "segments": scalar(conn, "SELECT count(*) FROM segments WHERE model_version = %s", (model_version,)),
        "composers": scalar(conn, "SELECT count(DISTINCT composer) FROM tracks"),
    }


def _overlap_table(results: list[dict[str, Any]]) -> str:
    def pair(x: list[float], digits: int = 2) -> str:
        return f"{x[0]:.{digits}f} → {x[1]:.{digits}f}"

    return md_table(
        [
            "signal",
            "condition",
            "overlap@10 with context-free (mean)",
            "least overlap",
            "queries whose top 10 changed",
            "reordered",
            "ranks changed (mean)",
            "arousal of top 10",
            "loudness dB of top 10",
            "switched off = context-free, exactly",
            "answer's own report agrees",
        ],
        [
            (
                r["signal"],
                r["condition"],
                r["overlap_mean"],
                r["overlap_min"],
                f"{r['share_changed']:.0%}",
                f"{r['share_reordered']:.0%}",
                r["changed_ranks_mean"],
                pair(r["arousal_top10"]),
                pair(r["loudness_db_top10"], 1),
                f"{r['off_exact'][0]}/{r['off_exact'][1]}" if r["off_exact"] else "—",
                f"{r['report_agrees'][0]}/{r['report_agrees'][1]}" if r["report_agrees"] else "—",
            )
            for r in results
        ],  # fmt: skip
    )


def _report(
    *, results: list[dict[str, Any]], timings: list[dict[str, float]], library: dict[str, int], model_version: str,
    n_queries: int, seed: int, elapsed: float, postgres: str, pgvector: str,
) -> Report:  # fmt: skip
    report = Report(name="context", title="Listening context: what each signal does to the top 10")
    report.machine = machine_info(postgres=postgres, pgvector=pgvector)
    report.data = {
        "library": library,
        "model_version": model_version,
        "k": K,
        "queries": n_queries,
        "seed": seed,
        "weights": {
            "time_of_day": TIME_OF_DAY_WEIGHT,
            "history_min": HISTORY_WEIGHT,
            "mood_followup": FOLLOWUP_MOOD_WEIGHT,
        },
        "rows": results,
        "timings_ms_all_on": {
            f"{name}_p50": float(np.median([t.get(stage, 0.0) for t in timings]))
            for name, stage in (("context_report", "context"), ("rerank", "rerank"), ("total", "total"))
        },
        "elapsed_s": round(elapsed, 1),
    }
    report.notes = [
        f"Demo library: {library['tracks']} tracks, {library['segments']:,} segments, {library['composers']} "
        f"composers; model {model_version}; {n_queries} library moments as queries (own track left out), k = {K}, "
        f"seed {seed}.",
        "Baseline: the same search with every context switch off (context-free), measured in the same run.",
        f"Weights: time of day {TIME_OF_DAY_WEIGHT}, history at least {HISTORY_WEIGHT}, a mood follow-up "
        f"{FOLLOWUP_MOOD_WEIGHT} (embedding 1, harmony 0.35, progression 0.15, plus the timbre, rhythm and melody terms).",
        f"Machine shared with other work while this ran (load average in the machine block); {elapsed:.0f} s.",
    ]
    report.section("Overlap of the top 10 with the context-free ranking", _overlap_table(results))
    t = report.data["timings_ms_all_on"]
    report.section(
        "Cost",
        f"With all three signals on, ranking the answer again without each signal to report what it changed "
        f"took p50 {fmt(t['context_report_p50'])} ms (the rerank itself {fmt(t['rerank_p50'])} ms; the whole "
        f"search {fmt(t['total_p50'])} ms).",
    )
    return report


def run_context(
    *,
    settings: Any,
    out_dir: Path,
    n_queries: int = 40,
    seed: int = 0,
    build: bool = True,
    db: Any = None,
    embedder: Any = None,
) -> Report:
    """Measure every row of the module docstring; ``db``/``embedder`` default to the demo library's."""
    from tqdm import tqdm

    from cadenza.db import open_database
    from encoder.embed import resolve_embedder
    from retrieval.search import search

    if build:
        from retrieval.demo import build_demo

        summary = build_demo(settings=settings)  # DemoBuild() shows progress
        log.info("demo library: %s", summary)
    if embedder is None:
        embedder, _ = resolve_embedder(settings.checkpoint)
    own = db is None
    db = open_database(settings) if own else db
    listener = f"bench-context-{uuid.uuid4().hex[:12]}"
    rows: dict[tuple[str, str], _Row] = {}
    timings: list[dict[str, float]] = []
    t_start = time.perf_counter()
    try:
        with db.connection() as conn:
            pg, pgv = db_versions(conn)
            library = _library_counts(conn, embedder.model_version)
            queries = _queries(conn, embedder.model_version, n_queries, seed)
        if not queries:
            raise RuntimeError("the demo library has no segments for the current model; run `cadenza demo`")

        def run(req: SearchRequest) -> SearchResponse:
            return search(db=db, embedder=embedder, request=req)

        def row(signal: str, condition: str) -> _Row:
            return rows.setdefault((signal, condition), _Row(signal, condition))

        for ref in tqdm(queries, desc="context bench", unit="query"):
            timings.append(_measure(ref, run=run, db=db, listener=listener, row=row))
    finally:
        with db.connection() as conn:
            conn.execute("DELETE FROM plays WHERE listener_id = %s", (listener,))
            conn.commit()
        if own:
            db.close()
    report = _report(
        results=[r.to_json() for r in rows.values()], timings=timings, library=library,
        model_version=embedder.model_version, n_queries=len(queries), seed=seed,
        elapsed=time.perf_counter() - t_start, postgres=pg, pgvector=pgv,
    )  # fmt: skip
    report.write(out_dir)
    return report
