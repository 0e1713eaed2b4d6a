"""``python -m bench.claims``: the explanation checker on scripted explanations with labelled claims.

Reads tests/data/claims.json (made by tests/data/make_claims.py; labels by construction from the
facts), runs :func:`assistant.explain.check_explanation` on each explanation, and matches every
labelled claim to the checker's claim at the same words. A labelled claim the checker did not mark
counts as "passed as true". Precision and recall per class (contradicted, unsupported) and for
"flagged" (either), written to bench/results/claims.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from bench.report import Report, fmt, machine_info, md_table

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "claims.json"
#: checker verdict → label
VERDICT_LABEL = {"supported": "true", "contradicted": "contradicted", "unverified": "unsupported"}


def predictions(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per labelled claim: its label and what the checker said about those words."""
    from assistant.claims import find_claims
    from assistant.explain import check_explanation

    rows = []
    response = data["response"]
    for item in data["explanations"]:
        marked, _, _ = check_explanation(item["explanation"], response)
        found = find_claims(item["explanation"], response)
        used: set[int] = set()
        for claim in item["claims"]:
            want = claim["text"].lower()
            predicted = "true"  # not marked: the listener sees it as an unflagged claim
            for i, c in enumerate(found):
                if i in used:
                    continue
                got = c.text.lower()
                if want in got or got in want:
                    predicted = VERDICT_LABEL[c.verdict]
                    used.add(i)
                    break
            rows.append(
                {"id": item["id"], **claim, "predicted": predicted, "marked": marked != item["explanation"]}
            )
    return rows


def scores(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, positive in (
        ("contradicted", {"contradicted"}),
        ("unsupported", {"unsupported"}),
        ("flagged (contradicted or unsupported)", {"contradicted", "unsupported"}),
    ):
        tp = sum(r["label"] in positive and r["predicted"] in positive for r in rows)
        fp = sum(r["label"] not in positive and r["predicted"] in positive for r in rows)
        fn = sum(r["label"] in positive and r["predicted"] not in positive for r in rows)
        out[name] = {
            "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0,
            "support": float(tp + fn),
        }
    return out


def run(out_dir: Path, data_file: Path = DATA) -> Report:
    data = json.loads(data_file.read_text())
    rows = predictions(data)
    table = scores(rows)
    confusion = Counter((r["label"], r["predicted"]) for r in rows)
    by_kind: dict[str, list[int]] = {}
    for r in rows:
        hit = r["label"] == r["predicted"]
        by_kind.setdefault(r["kind"], []).append(int(hit))
    report = Report(
        name="claims", title="Explanation checker: claims against the facts", machine=machine_info()
    )
    report.notes += [
        f"{len(data['explanations'])} scripted explanations, {len(rows)} labelled claims "
        f"({Counter(r['label'] for r in rows)['true']} true, {Counter(r['label'] for r in rows)['contradicted']} "
        f"contradicted, {Counter(r['label'] for r in rows)['unsupported']} unsupported); data: tests/data/claims.json.",
        "A labelled claim the checker left unmarked counts as predicted true.",
        "Target: recall on contradicted claims >= 0.9.",
    ]
    report.section(
        "Precision and recall",
        md_table(
            ["class", "precision", "recall", "claims"],
            [[k, fmt(v["precision"]), fmt(v["recall"]), int(v["support"])] for k, v in table.items()],
        ),
    )
    labels = ["true", "contradicted", "unsupported"]
    report.section(
        "Confusion (rows: label, columns: checker)",
        md_table(
            ["label \\ checker", *labels], [[lab, *(confusion[(lab, p)] for p in labels)] for lab in labels]
        ),
    )
    report.section(
        "Exact verdict per kind of claim",
        md_table(
            ["kind", "claims", "verdict right"],
            [[k, len(v), fmt(sum(v) / len(v))] for k, v in sorted(by_kind.items())],
        ),
    )
    misses = [r for r in rows if r["label"] != r["predicted"]]
    if misses:
        report.section(
            "Wrong verdicts",
            md_table(
                ["#", "kind", "claim", "label", "checker"],
                [[r["id"], r["kind"], r["text"], r["label"], r["predicted"]] for r in misses],
            ),
        )
    report.data = {
        "scores": table,
        "confusion": {f"{a}->{b}": n for (a, b), n in confusion.items()},
        "claims": len(rows),
        "explanations": len(data["explanations"]),
        "wrong": misses,
    }
    report.write(out_dir)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.claims", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args()
    report = run(args.out)
    for name, v in report.data["scores"].items():
        print(f"{name}: precision {v['precision']:.3f} recall {v['recall']:.3f} ({int(v['support'])} claims)")


if __name__ == "__main__":
    main()
