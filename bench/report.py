"""Writing benchmark results: the machine's description, a JSON file and a Markdown table.

Every run writes ``<out>/<name>.json`` (everything measured, machine-readable) and
``<out>/<name>.md`` (the same as tables a person reads, headed by the machine it ran on).
Times drift on a shared machine, so each benchmark measures the systems it compares in the
same run and reports their ratio; the machine block says how loaded the box was.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cadenza.git import git_commit
from cadenza.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

RESULTS_DIR = PROJECT_ROOT / "bench" / "results"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:  # psutil is a soft dependency here
        return float("nan")


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "not installed"


def machine_info(*, postgres: str | None = None, pgvector: str | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, RAM, load, library versions, commit, date."""
    import torch

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "load_avg_1_5_15": load,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "librosa": _version("librosa"),
        "postgres": postgres or "not used",
        "pgvector": pgvector or "not used",
        "os": platform.platform(),
        "git_commit": git_commit() or "unknown",
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def machine_of_sizes(results: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`machine_info` with the database versions the first size's results recorded."""
    first = results[0] if results else {}
    return machine_info(postgres=first.get("postgres"), pgvector=first.get("pgvector"))


def db_versions(conn) -> tuple[str, str]:
    """(PostgreSQL version, pgvector version) of an open psycopg connection."""
    pg = conn.execute("SHOW server_version").fetchone()[0]
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return str(pg), str(row[0]) if row else "not installed"


# --- Markdown ---------------------------------------------------------------------------


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: floats to ``digits`` significant places, None/NaN as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "—"
        if v == 0:
            return "0"
        if abs(v) >= 10**digits:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}"
    return str(value).replace("|", "\\|")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; every cell goes through :func:`fmt`."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
    return "\n".join(lines)


def machine_md(machine: dict[str, Any]) -> str:
    rows = [(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in machine.items()]
    return md_table(["machine", "value"], rows)


@dataclass
class Report:
    """One benchmark's results: sections of Markdown plus the raw numbers for JSON."""

    name: str
    title: str
    machine: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    sections: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    def section(self, heading: str, body: str) -> None:
        self.sections.append((heading, body))

    def to_markdown(self) -> str:
        parts = [f"# {self.title}", ""]
        if self.notes:
            parts += [f"- {n}" for n in self.notes] + [""]
        for heading, body in self.sections:
            parts += [f"## {heading}", "", body, ""]
        for plot in self.plots:
            parts += [f"![{Path(plot).stem}]({Path(plot).name})", ""]
        parts += ["## Machine", "", machine_md(self.machine), ""]
        return "\n".join(parts)

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        """Write ``<name>.json`` and ``<name>.md`` into ``out_dir``; returns both paths."""
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path, md_path = out_dir / f"{self.name}.json", out_dir / f"{self.name}.md"
        payload = {
            "name": self.name,
            "title": self.title,
            "machine": self.machine,
            "notes": self.notes,
            "results": self.data,
            "plots": [Path(p).name for p in self.plots],
        }
        json_path.write_text(json.dumps(_jsonable(payload), indent=1, allow_nan=False) + "\n")
        md_path.write_text(self.to_markdown())
        log.info("wrote %s and %s", json_path, md_path)
        return json_path, md_path


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays → Python; NaN/inf → None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, Path):
        return str(value)
    return value


def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / mean / n of a list of latencies (ms)."""
    arr = np.asarray(values_ms, dtype=np.float64)
    if arr.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "mean": float("nan"), "n": 0}
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "mean": float(arr.mean()),
        "n": int(arr.size),
    }


def save_plot(fig, path: Path) -> Path:
    """Save a matplotlib figure (Agg) as PNG and close it."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
