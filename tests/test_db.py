"""cadenza.db: the embedded PostgreSQL opens data folders made by the older pgserver wheel.

The old folder is built in the test by pgserver 0.1.4 itself (PostgreSQL 16.2, pgvector 0.6.2;
a test extra), in its own interpreter so its module state never meets the new server's.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cadenza.db import EMBEDDED_PG_MAJOR, embedded_major, open_database
from cadenza.errors import ConfigError
from cadenza.settings import Settings

# Made by pgserver 0.1.4 with cadenza's own migrations, one track and 3 segments, then stopped.
_OLD_FOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import pgserver
    import psycopg

    from cadenza.db import apply_migrations

    server = pgserver.get_server(Path(sys.argv[1]), cleanup_mode="stop")
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            apply_migrations(conn)
            tid = conn.execute(
                "INSERT INTO tracks (content_hash, path, title, composer, duration_s)"
                " VALUES ('h', '/x.wav', 'Old', 'Someone', 14) RETURNING id"
            ).fetchone()[0]
            for i in range(3):
                vec = "[" + ",".join(["0"] * i + ["1"] + ["0"] * (127 - i)) + "]"
                conn.execute(
                    "INSERT INTO segments (track_id, start_s, end_s, embedding, model_version, chroma_mean)"
                    " VALUES (%s, %s, %s, %s::vector, 'm', array_fill(1.0 / 12, ARRAY[12]))",
                    (tid, 2.0 * i, 2.0 * i + 10, vec),
                )
            print(conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0])
            print(conn.execute("SHOW server_version").fetchone()[0])
    finally:
        server.cleanup()
    """
)


def _old_home(tmp_path: Path) -> Path:
    pytest.importorskip("pgserver", reason="pgserver 0.1.4 (the test extra) makes the old folder")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run-old")}
    Path(env["XDG_RUNTIME_DIR"]).mkdir(mode=0o700)
    out = subprocess.run(
        [sys.executable, "-c", _OLD_FOLDER, str(home / "pgdata")],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0.6.2", "16.2"], "the old wheel must make an old folder"
    return home


@pytest.mark.slow
def test_folder_from_old_pgserver_opens_updated_with_rows_and_index(tmp_path, caplog):
    home = _old_home(tmp_path)
    settings = Settings.from_env({"CADENZA_HOME": str(home)})
    with caplog.at_level(logging.WARNING, logger="cadenza.db"):
        db = open_database(settings)
    try:
        assert db.vector_version >= (0, 8), "the old extension is updated in place"
        assert db.supports_iterative_scan
        said = [r.getMessage() for r in caplog.records if "updated pgvector" in r.getMessage()]
        assert len(said) == 1 and "0.6.2" in said[0] and str(home / "pgdata") in said[0]
        with db.connection() as conn:
            assert conn.execute("SHOW server_version").fetchone()[0].startswith("16.")
            assert conn.execute("SELECT title FROM tracks").fetchall() == [("Old",)]
            # The HNSW index built by pgvector 0.6 serves an iterative, filtered scan under 0.8.
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
            conn.execute("SET enable_seqscan = off")
            q = np.zeros(128, dtype=np.float32)
            q[1] = 1.0
            sql = "SELECT start_s FROM segments WHERE end_s > 11 ORDER BY embedding <=> %s LIMIT 2"
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, (q,)).fetchall())
            assert "segments_embedding_hnsw" in plan
            assert [r[0] for r in conn.execute(sql, (q,)).fetchall()][0] == 2.0
    finally:
        db.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cadenza.db"):
        again = open_database(settings)
    again.close()
    assert not [r for r in caplog.records if "updated pgvector" in r.getMessage()], (
        "said once, not every start"
    )


def test_new_folder_uses_the_default_major_and_an_unknown_one_is_one_clear_line(tmp_path):
    assert embedded_major(tmp_path / "absent") == EMBEDDED_PG_MAJOR
    odd = tmp_path / "pg12"
    odd.mkdir()
    (odd / "PG_VERSION").write_text("12\n")
    with pytest.raises(ConfigError, match="PostgreSQL 12.*CADENZA_DATABASE_URL"):
        embedded_major(odd)
