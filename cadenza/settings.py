"""Settings, one frozen dataclass per concern, read from the environment once.

``Settings.from_env()`` is called at the edge (CLI entry, app factory, test fixture) and
the result is passed explicitly; nothing here runs at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cadenza.errors import ConfigError

#: Repository root: sql/, templates/, static/ and the shipped checkpoint live here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _default_home() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("cadenza", appauthor=False))


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; set it to a whole number or unset it") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set it to a number or unset it") from None


class _Under:
    """A read-only attribute of :class:`PathSettings`: the folder of that attribute's name under ``home``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: PathSettings, owner: type | None = None) -> Path:
        return obj.home / self.name


@dataclass(frozen=True)
class PathSettings:
    """Everything Cadenza writes lives under ``home`` (``CADENZA_HOME``)."""

    home: Path

    # The folders under ``home``, each named as its attribute.
    pgdata = _Under()
    uploads = _Under()
    corpus = _Under()
    demo = _Under()
    cache = _Under()

    def ensure_writable(self) -> None:
        """Create ``home`` and prove it is writable, or raise one clear ``ConfigError``."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            probe = self.home / ".write-probe"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"CADENZA_HOME={self.home} is not writable ({exc.strerror or exc}); "
                "point CADENZA_HOME at a folder you can write to"
            ) from None


@dataclass(frozen=True)
class DatabaseSettings:
    """``url`` None means: start the embedded PostgreSQL (pgserver) under ``CADENZA_HOME``."""

    url: str | None
    pool_min: int = 1
    pool_max: int = 8
    connect_timeout_s: float = 5.0
    #: Tries to restart a dead embedded server per outage (0: never restart it; see cadenza/db.py).
    restart_tries: int = 5


@dataclass(frozen=True)
class LLMSettings:
    """Any OpenAI-compatible endpoint. ``base_url`` None means the offline explainer."""

    base_url: str | None
    api_key: str
    model: str
    timeout_s: float = 20.0
    max_retries: int = 1

    @property
    def enabled(self) -> bool:
        return bool(self.base_url)


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    secret: str = ""
    secure_cookies: bool = False


@dataclass(frozen=True)
class LimitSettings:
    max_upload_bytes: int = 50 * 1024 * 1024
    max_clip_seconds: float = 600.0
    min_clip_seconds: float = 3.0
    decode_timeout_s: float = 60.0
    requests_per_minute: int = 120


@dataclass(frozen=True)
class Settings:
    paths: PathSettings
    database: DatabaseSettings
    llm: LLMSettings
    server: ServerSettings = field(default_factory=ServerSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    #: Path to the encoder checkpoint folder; None means the shipped one.
    checkpoint: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        home = Path(env["CADENZA_HOME"]).expanduser() if env.get("CADENZA_HOME") else _default_home()
        checkpoint = env.get("CADENZA_CHECKPOINT")
        return cls(
            paths=PathSettings(home=home),
            database=DatabaseSettings(
                url=env.get("CADENZA_DATABASE_URL") or None,
                pool_max=_int(env, "CADENZA_DB_POOL_MAX", DatabaseSettings.pool_max),
                connect_timeout_s=_float(
                    env, "CADENZA_DB_CONNECT_TIMEOUT", DatabaseSettings.connect_timeout_s
                ),
                restart_tries=_int(env, "CADENZA_DB_RESTART_TRIES", DatabaseSettings.restart_tries),
            ),
            llm=LLMSettings(
                base_url=env.get("CADENZA_LLM_BASE_URL") or env.get("OPENAI_BASE_URL") or None,
                api_key=env.get("CADENZA_LLM_API_KEY") or env.get("OPENAI_API_KEY") or "not-needed",
                model=env.get("CADENZA_LLM_MODEL", "gpt-4o-mini"),
                timeout_s=_float(env, "CADENZA_LLM_TIMEOUT", LLMSettings.timeout_s),
                max_retries=_int(env, "CADENZA_LLM_MAX_RETRIES", LLMSettings.max_retries),
            ),
            server=ServerSettings(
                host=env.get("CADENZA_HOST", ServerSettings.host),
                port=_int(env, "CADENZA_PORT", ServerSettings.port),
                secret=env.get("CADENZA_SECRET", ""),
                secure_cookies=env.get("CADENZA_SECURE_COOKIES", "") in ("1", "true", "yes"),
            ),
            limits=LimitSettings(
                max_upload_bytes=_int(env, "CADENZA_MAX_UPLOAD_BYTES", LimitSettings.max_upload_bytes),
                max_clip_seconds=_float(env, "CADENZA_MAX_CLIP_SECONDS", LimitSettings.max_clip_seconds),
                decode_timeout_s=_float(env, "CADENZA_DECODE_TIMEOUT", LimitSettings.decode_timeout_s),
                requests_per_minute=_int(env, "CADENZA_RATE_LIMIT", LimitSettings.requests_per_minute),
            ),
            checkpoint=Path(checkpoint) if checkpoint else None,
        )
