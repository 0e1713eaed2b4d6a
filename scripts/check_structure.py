"""Structure rules ruff does not check; ``make lint`` runs this (one line per breach).

* A test module never imports another test module: shared helpers and fixtures live in
  ``tests/conftest.py`` and ``tests/helpers_*.py``. A breach fails (exit 1).
* No function in ``bench/`` or the training loop (``encoder/train.py``, ``encoder/train_run.py``) is
  longer than ``MAX_FUNCTION_LINES`` lines: a long benchmark is split into named steps. Listed as a
  warning; ``--strict`` (what ``make lint`` runs) fails on it too.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 80
#: Where functions must stay short.
SHORT_FUNCTIONS = ("bench", "encoder/train.py", "encoder/train_run.py")


def _python_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.rglob("*.py"))
    return [path] if path.is_file() else []


def cross_test_imports(root: Path = ROOT) -> Iterator[str]:
    """``tests/test_x.py`` importing from ``tests.test_y`` (or ``.test_y``)."""
    for path in sorted((root / "tests").glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [("." * node.level) + node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                last = name.lstrip(".").split(".")
                if name.startswith("tests.test_") or (name.startswith(".") and last[-1].startswith("test_")):
                    yield (
                        f"{path.relative_to(root)}:{node.lineno}: imports {name}; move what it shares into "
                        "tests/conftest.py or a tests/helpers_*.py module"
                    )


def long_functions(root: Path = ROOT, limit: int = MAX_FUNCTION_LINES) -> Iterator[str]:
    """Functions in ``SHORT_FUNCTIONS`` longer than ``limit`` lines (decorators not counted)."""
    for where in SHORT_FUNCTIONS:
        for path in _python_files(root / where):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = (node.end_lineno or node.lineno) - node.lineno + 1
                    if n > limit:
                        yield f"{path.relative_to(root)}:{node.lineno}: {node.name} is {n} lines (at most {limit})"


def main(argv: list[str] | None = None) -> int:
    strict = "--strict" in (sys.argv[1:] if argv is None else argv)
    errors = list(cross_test_imports())
    long = list(long_functions())
    for line in errors:
        print(line)
    for line in long:
        print(line if strict else f"warning: {line}")
    return 1 if errors or (strict and long) else 0


if __name__ == "__main__":
    raise SystemExit(main())
