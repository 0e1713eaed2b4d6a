"""Choosing retrieval.repeats' margin on TRAINING sources (behind bench/results/repeats.md, session 11).

Product search (retrieval.search) on the training library that scripts/refind_replay.py sets up, the same
60 clips a distortion (seed 7). For every first result that is the query's own passage, every other peak of
the line-up (retrieval.repeats.repeat_peaks with a loose floor) is recorded with the benchmark's
independent label: a literal repeat of the clip's true passage (bench.metrics.literal_repeat, clean log-mel
frames correlating >= 0.97) or the true passage itself (the product cited the repeat). Then, per margin:
the precision of also-at and the share of clips whose true moment is cited (first result's start or one
of its also-at times).

    REFIND_WORK=DIR python scripts/refind_replay.py setup      # once: DIR/train-db and DIR/queries.pkl
    REFIND_WORK=DIR python scripts/repeat_tune.py collect       # DIR/repeat_peaks.json
    REFIND_WORK=DIR python scripts/repeat_tune.py table         # precision / true moment cited per margin

HO=1 (the held-out bench's queries, after `refind_replay.py setup_ho`) only for a final look, never to choose.
Scratch quality; not part of the product or of CI."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np

W = Path(os.environ.get("REFIND_WORK", "."))
HO = bool(os.environ.get("HO"))
MARGINS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2)
LOOSE_FLOOR = 0.5


def collect() -> None:
    import torch

    torch.set_num_threads(1)
    from tqdm import tqdm

    import retrieval.repeats as R
    import retrieval.search as S
    from bench.metrics import HIT_TOLERANCE_S, literal_repeat
    from bench.pgbench_db import keep_lock_files_for_the_run, open_temp_database
    from encoder.embed import resolve_embedder
    from retrieval.types import SearchRequest

    keep_lock_files_for_the_run()
    d = pickle.loads((W / ("ho_queries.pkl" if HO else "queries.pkl")).read_bytes())
    embedder, _ = resolve_embedder(None)
    db = open_temp_database(W / ("ho-db" if HO else "train-db"))
    cap: dict[str, Any] = {}
    orig = R.also_at

    def spy(**kw: Any) -> list[float]:
        cap.setdefault("calls", []).append(
            (kw["alignment"], R.repeat_peaks(**{k: v for k, v in kw.items() if k != "margin"},
                                            floor=LOOSE_FLOOR, max_n=20))
        )  # fmt: skip
        return orig(**kw)

    R.also_at = spy  # type: ignore[assignment]
    rows = []
    try:
        for label, qs in d["qs"].items():
            for qi, (wi, t, length, audio) in enumerate(tqdm(qs, desc=label, mininterval=30)):
                right = d["db_id"][wi]
                if right < 0:
                    continue
                cap.clear()
                resp = S.search(
                    db=db, embedder=embedder, request=SearchRequest(audio=audio, start_s=None, k=10)
                )
                r0 = resp.results[0] if resp.results else None
                own = r0 is not None and r0.track_id == right
                row: dict[str, Any] = {
                    "label": label, "qi": qi, "true": t, "own": own, "length": length,
                    "cited": r0.start if r0 else None,
                    "hit": bool(own and r0 is not None and abs(r0.start - t) <= HIT_TOLERANCE_S),
                    "also_at": list(r0.also_at) if r0 else [], "peaks": [], "best": None,
                    "passage": r0.components.get("passage") if r0 else None,
                    "repeats_ms": resp.timings_ms.get("repeats"),
                }  # fmt: skip
                calls = cap.get("calls", [])
                if own and calls and r0 is not None:
                    a, peaks = calls[0]  # the first result is filled first
                    row["best"] = a.score
                    for start, score in peaks:
                        near = abs(start - t) <= HIT_TOLERANCE_S
                        lit = literal_repeat(
                            mel=d["mels"][wi], true_start_s=t, found_start_s=start, length_s=length
                        )
                        row["peaks"].append({"start": start, "score": score, "true": near, "literal": lit})
                rows.append(row)
    finally:
        db.close()
    out = W / ("repeat_peaks_ho.json" if HO else "repeat_peaks.json")
    out.write_text(json.dumps(rows, indent=0, default=float))
    print("wrote", out, len(rows))


def table(path: Path) -> str:
    rows = json.loads(path.read_text())
    labels = list(dict.fromkeys(r["label"] for r in rows))
    lines = [
        "| margin | also-at precision (literal repeat or the true place) | also-at given | clips with also-at "
        "| true moment cited | " + " | ".join(labels) + " |",
        "|---|---|---|---|---|" + "---|" * len(labels),
    ]
    strict = {lab: np.mean([r["hit"] for r in rows if r["label"] == lab]) for lab in labels}
    lines.append(
        "| strict top-1 (no also-at) | | | | "
        + f"{np.mean([r['hit'] for r in rows]):.3f} | "
        + " | ".join(f"{strict[lab]:.3f}" for lab in labels) + " |"
    )  # fmt: skip
    for m in MARGINS:
        good = total = clips = 0
        cited: dict[str, list[bool]] = {lab: [] for lab in labels}
        for r in rows:
            chosen = []
            if r["best"] is not None and r["best"] >= 0.8:
                chosen = [p for p in r["peaks"][:4] if p["score"] >= max(0.8, r["best"] - m)]
            total += len(chosen)
            good += sum(bool(p["true"] or p["literal"]) for p in chosen)
            clips += bool(chosen)
            cited[r["label"]].append(bool(r["hit"] or any(p["true"] for p in chosen)))
        allc = [v for vs in cited.values() for v in vs]
        prec = f"{good / total:.3f} ({good}/{total})" if total else "-"
        lines.append(
            f"| {m} | {prec} | {total} | {clips} | {np.mean(allc):.3f} | "
            + " | ".join(f"{np.mean(cited[lab]):.3f}" for lab in labels) + " |"
        )  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1] == "collect":
        collect()
    else:
        print(table(W / ("repeat_peaks_ho.json" if HO else "repeat_peaks.json")))
