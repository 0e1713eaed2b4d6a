"""The structure check ``make lint`` runs: it finds a test module importing another, and a long function."""

from __future__ import annotations

from pathlib import Path

from scripts.check_structure import ROOT, cross_test_imports, long_functions


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_a_test_module_importing_another_is_found(tmp_path):
    root = _tree(
        tmp_path,
        {
            "tests/test_a.py": "from tests.test_b import helper\n",
            "tests/test_b.py": "from .test_c import x\nimport tests.test_d\nfrom tests.helpers_app import ok\n",
            "tests/helpers_x.py": "from tests.test_a import y\n",  # helpers are not test modules
        },
    )
    found = list(cross_test_imports(root))
    assert len(found) == 3 and all("tests/conftest.py" in f for f in found), found
    assert {f.split(":")[0] for f in found} == {"tests/test_a.py", "tests/test_b.py"}


def test_a_long_function_is_found(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    files = {"bench/m.py": f"def short():\n    pass\n\n\ndef long():\n{body}\n", "encoder/train.py": ""}
    assert [f.split(": ")[1] for f in long_functions(_tree(tmp_path, files))] == [
        "long is 81 lines (at most 80)"
    ]


def test_this_tree_has_no_test_importing_another():
    assert list(cross_test_imports(ROOT)) == []
