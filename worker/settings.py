"""Worker settings from environment variables (prefix ``SEGBOARD_``) and an optional settings file.

Nothing is read at import time: call :func:`get_settings` where the settings are needed and pass
the result down. Precedence, highest first: keyword overrides, environment variables, the settings
file (``SEGBOARD_SETTINGS_FILE`` or ``settings_file=``; TOML, YAML, JSON or ``.env``), defaults.

Example:
    >>> s = get_settings(home="/tmp/sb", heartbeat_s=2, lease_s=10)
    >>> s.database_url
    'sqlite:////tmp/sb/segboard.db'
"""

from __future__ import annotations

import contextvars
import json
import os
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = ["Settings", "SettingsFileError", "get_settings", "SETTINGS_FILE_ENV"]

SETTINGS_FILE_ENV = "SEGBOARD_SETTINGS_FILE"

_settings_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("segboard_settings_file", default=None)


class SettingsFileError(ValueError):
    """The settings file is missing, unreadable or not a mapping of setting names to values."""


def _read_settings_file(path: Path) -> dict[str, Any]:
    """Read a TOML, YAML, JSON or dotenv file into a dict of (lower-case, prefix-free) names."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsFileError(
            f"cannot read the settings file {path}: {exc.strerror}; fix the path in {SETTINGS_FILE_ENV}"
        ) from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        elif suffix in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:  # dotenv: NAME=value lines
            data = {}
            for line in text.splitlines():
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, _, value = line.partition("=")
                data[key.strip()] = value.strip().strip("'\"")
    except Exception as exc:  # any parser error becomes one clear message
        raise SettingsFileError(f"cannot parse the settings file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsFileError(f"the settings file {path} must hold a mapping of names to values")
    # a [segboard] table / section is accepted as well as top-level keys
    if isinstance(data.get("segboard"), dict):
        data = data["segboard"]
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).lower()
        name = name.removeprefix("segboard_")
        out[name] = value
    return out


class _SettingsFileSource(PydanticBaseSettingsSource):
    """Values from the settings file chosen by :func:`get_settings` or ``SEGBOARD_SETTINGS_FILE``."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _settings_file.get()
        if path is None:
            env = os.environ.get(SETTINGS_FILE_ENV)
            path = Path(env).expanduser() if env else None
        if path is None:
            return {}
        data = _read_settings_file(path)
        known = set(self.settings_cls.model_fields)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsFileError(
                f"unknown settings {unknown} in {path}; valid names: {', '.join(sorted(known))}"
            )
        return data


class Settings(BaseSettings):
    """Everything a worker, the CLI and the web app need to find the database, broker and files."""

    model_config = SettingsConfigDict(env_prefix="SEGBOARD_", extra="forbid", validate_default=True)

    home: Path = Field(default=Path("~/.segboard"), description="Folder for the embedded database and artifacts.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: SQLite at <home>/segboard.db. PostgreSQL: postgresql://user@host/db.",
    )
    redis_url: str | None = Field(
        default=None, description="Broker URL (redis://host:6379/0); None starts an embedded Redis."
    )
    artifact_root: str | None = Field(
        default=None, description="Local folder or fsspec URL (s3://bucket/prefix); default <home>/artifacts."
    )
    dataset_root: str | None = Field(
        default=None,
        description="Folder or fsspec URL that dataset locations are relative to; default <home>/datasets.",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for a remote artifact or dataset root, as JSON: "
        '{"endpoint_url": "http://minio:9000"}; credentials usually come from the environment (AWS_ACCESS_KEY_ID).',
    )
    artifact_cache: Path | None = Field(
        default=None, description="Local mirror of a remote artifact or dataset root; default <home>/artifact-cache."
    )
    weights_dir: Path | None = Field(
        default=None, description="Cache of pretrained encoder weights, read before any download (docs/weights.md); "
        "default <artifact root>/weights, or <artifact cache>/weights when the artifact root is remote.",
    )
    weights_offline: bool = Field(
        default=False, description="Never download pretrained weights: a weight file missing from the cache fails."
    )
    # ------------------------------------------------------------ retention (docs/storage.md)
    retention_drop_last_checkpoint: bool = Field(
        default=True, description="`segboard gc` removes the `last` checkpoint of a succeeded run (the `best` one, "
        "which predictions use, is always kept); pinned runs are left alone.",
    )
    retention_test_store_days: int | None = Field(
        default=None, ge=0, description="`segboard gc` removes test probability stores of runs and groups older than "
        "this many days, unless pinned or used by an ensemble, pseudo-label round, submission or a queued job "
        "(None: keep them). A removed store can be predicted again from the best checkpoint.",
    )
    # ------------------------------------------------------------ access (docs/access.md)
    auth: Literal["none", "local", "oidc", "local+oidc"] = Field(
        default="none",
        description="How people log in to the web app: none (single-user, bound to 127.0.0.1), local "
        "(SegBoard accounts with passwords), oidc (the organisation's OpenID Connect provider, "
        "configured in .streamlit/secrets.toml [auth]) or local+oidc.",
    )
    session_idle_minutes: int = Field(
        default=720, ge=1, le=525_600, description="A web login ends after this many minutes without a request."
    )
    session_max_days: int = Field(
        default=30, ge=1, le=3650, description="A web login ends this many days after it began."
    )
    oidc_role_claim: str | None = Field(
        default=None, description="ID-token claim whose value picks a first OIDC login's role through oidc_role_map."
    )
    oidc_role_map: dict[str, Literal["admin", "member", "viewer"]] = Field(
        default_factory=dict,
        description='Claim value -> role for a first OIDC login, as JSON: {"ml-leads": "admin"}; default viewer.',
    )
    member_max_priority: int = Field(
        default=5, ge=0, le=9, description="The highest queue priority (0-9) a member may set; admins may set any."
    )
    max_active_runs_per_member: int | None = Field(
        default=100, ge=1,
        description="Queued plus running runs one member may have at once (None: no limit); admins are exempt.",
    )
    extra_dataset_roots: list[str] = Field(
        default_factory=list,
        description="Local folders, besides dataset_root, that dataset and config paths may point into, as JSON.",
    )
    remote_dataset_prefixes: list[str] = Field(
        default_factory=list,
        description='fsspec URL prefixes datasets may be read from besides a remote dataset_root: ["s3://team-data/"].',
    )
    upload_quota_gb: float = Field(
        default=50.0, gt=0, description="Unpacked gigabytes of uploaded archives one member may keep."
    )
    max_concurrent_uploads: int = Field(default=2, ge=1, description="Uploads one member may have in progress.")
    heartbeat_s: float = Field(default=5.0, gt=0, description="Seconds between a worker's heartbeats.")
    lease_s: float = Field(default=30.0, gt=0, description="A claim expires this long after the last heartbeat.")
    visibility_timeout_s: int = Field(
        default=3600, gt=0, description="Redis redelivers an unacknowledged message after this many seconds."
    )
    reaper_interval_s: float = Field(default=10.0, gt=0, description="Seconds between reaper passes.")
    max_workers_lost: int = Field(
        default=3, ge=1, le=100,
        description="A run (or job) whose worker dies this many times in a row fails instead of being requeued "
        "(a process killed again and again is usually out of memory); raise it on preemptible machines.",
    )
    public_url: str | None = Field(
        default=None, pattern=r"^https?://[^\s/]+(/\S*)?$",
        description="The dashboard's address as members open it, e.g. https://segboard.example.org; "
        "notifications link to pages under it (no links when unset).",
    )
    notify_max_attempts: int = Field(
        default=6, ge=1, le=20, description="Attempts to deliver one notification before giving up."
    )
    notify_backoff_s: float = Field(
        default=30.0, gt=0, description="Wait before a notification's second attempt; each later wait is 4x longer."
    )
    notify_timeout_s: float = Field(default=5.0, gt=0, le=60, description="Seconds one webhook request may take.")
    queue_name: str = Field(default="segboard", min_length=1, description="Celery queue for training runs.")
    jobs_queue_name: str = Field(default="segboard-jobs", min_length=1, description="Celery queue for other jobs.")
    worker_name: str | None = Field(default=None, description="This worker's name; default: the host name.")
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0, description="How long SQLite waits for a lock.")
    database_echo: bool = Field(default=False, description="Log every SQL statement (debugging).")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR.")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _SettingsFileSource(settings_cls)

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, v: Path) -> Path:
        return v.expanduser().absolute()

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        scheme = v.split("://", 1)[0].split("+", 1)[0] if "://" in v else ""
        if scheme not in {"sqlite", "postgresql", "postgres"}:
            raise ValueError(
                f"database_url {v!r} is not supported; use sqlite:///path/to/segboard.db "
                "or postgresql://user:password@host:5432/dbname"
            )
        return v

    @field_validator("redis_url")
    @classmethod
    def _known_broker(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"redis_url {v!r} is not a Redis URL; use redis://host:6379/0 (or leave it unset for embedded Redis)"
            )
        return v

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, v: str) -> str:
        level = v.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(f"log_level {v!r} is unknown; use DEBUG, INFO, WARNING or ERROR")
        return level

    @model_validator(mode="after")
    def _derive_and_check(self) -> Settings:
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.home / 'segboard.db'}"
        if self.artifact_root is None:
            self.artifact_root = str(self.home / "artifacts")
        if self.dataset_root is None:
            self.dataset_root = str(self.home / "datasets")
        if self.worker_name is None:
            self.worker_name = socket.gethostname()
        if self.lease_s < 2 * self.heartbeat_s:
            raise ValueError(
                f"lease_s ({self.lease_s:g}) must be at least twice heartbeat_s ({self.heartbeat_s:g}), "
                "or a single late heartbeat would let another worker take a run that is still training"
            )
        if self.visibility_timeout_s <= self.lease_s:
            raise ValueError(
                f"visibility_timeout_s ({self.visibility_timeout_s}) must exceed lease_s ({self.lease_s:g}); "
                "set it to at least the lease (one hour is the usual value)"
            )
        if self.queue_name == self.jobs_queue_name:
            raise ValueError(f"queue_name and jobs_queue_name must differ, both are {self.queue_name!r}")
        return self

    # -------------------------------------------------------------- derived

    @property
    def is_sqlite(self) -> bool:
        """Whether the database is the embedded SQLite file."""
        return str(self.database_url).startswith("sqlite")

    @property
    def accounts_enabled(self) -> bool:
        """Whether people log in (local accounts or OIDC) rather than the single-user mode."""
        return self.auth != "none"

    def check_web_host(self, host: str | None) -> None:
        """Refuse to serve the web app beyond this machine in single-user mode (docs/access.md).

        Args:
            host: The address the web app listens on; None or "" is every interface.

        Raises:
            ValueError: ``host`` is not a loopback address (or a unix socket) and ``auth`` is none.
        """
        import ipaddress

        if self.accounts_enabled:
            return
        address = (host or "").strip().strip("[]")
        if address == "localhost" or address.startswith("unix://"):
            return
        try:
            if address and ipaddress.ip_address(address).is_loopback:
                return
        except ValueError:
            pass
        raise ValueError(
            f"the web app would listen on {address or 'every interface'}, but SegBoard has no accounts "
            "(auth = none, single-user mode): anyone who reaches it could act as any member. Keep the host "
            "127.0.0.1, or set SEGBOARD_AUTH to local, oidc or local+oidc first (docs/access.md)"
        )

    @property
    def artifact_root_is_local(self) -> bool:
        """Whether ``artifact_root`` is a local folder rather than an fsspec URL."""
        root = str(self.artifact_root)
        return "://" not in root or root.startswith("file://")

    @property
    def artifact_cache_dir(self) -> Path:
        """Where remote artifacts and datasets are mirrored on this machine."""
        return (self.artifact_cache or self.home / "artifact-cache").expanduser().absolute()

    @property
    def weights_path(self) -> Path:
        """The pretrained-weights cache folder of this machine (see ``weights_dir``)."""
        if self.weights_dir is not None:
            return self.weights_dir.expanduser().absolute()
        if self.artifact_root_is_local:
            return Path(str(self.artifact_root).removeprefix("file://")).expanduser().absolute() / "weights"
        return self.artifact_cache_dir / "weights"

    def artifact_path(self, *parts: str) -> str:
        """Join ``parts`` under the artifact root (``/`` separators, so URLs work too)."""
        root = str(self.artifact_root).rstrip("/")
        return "/".join([root, *(p.strip("/") for p in parts)])


def get_settings(*, settings_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from overrides, the environment and the settings file.

    Args:
        settings_file: A TOML/YAML/JSON/dotenv file; default ``$SEGBOARD_SETTINGS_FILE`` if set.
        **overrides: Setting values that win over everything else (tests use these).

    Raises:
        SettingsFileError: The settings file cannot be read or names unknown settings.
        ValueError: A setting is invalid; the message names it and says what is accepted.
    """
    token = _settings_file.set(Path(settings_file).expanduser() if settings_file is not None else None)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ValueError(f"invalid SegBoard settings (SEGBOARD_* variables or settings file): {problems}") from exc
    finally:
        _settings_file.reset(token)
