"""The source revision a result was made with, recorded in checkpoints and benchmark results."""

from __future__ import annotations

import subprocess

from cadenza.settings import PROJECT_ROOT


def git_commit() -> str | None:
    """The short commit id of the checkout, or None outside a git checkout (an installed copy)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
