"""Typed settings: the only module that reads ``os.environ``.

Every setting is ``MODELHOST_<NAME>``; defaults give the embedded single-machine setup
(SQLite + local files under ``MODELHOST_HOME``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELHOST_", use_attribute_docstrings=True, frozen=True)

    home: Path = Field(default_factory=lambda: Path.home() / ".modelhost")
    """Directory for the embedded database, artifacts, logs and the CLI profile."""
    database_url: str | None = None
    """SQLAlchemy URL of the metadata store; default SQLite at ``$MODELHOST_HOME/modelhost.db``."""
    artifacts_url: str | None = None
    """``file:///path`` or ``s3://bucket/prefix``; default ``$MODELHOST_HOME/artifacts``."""
    host: str = "127.0.0.1"
    """Address the server binds. Loopback unless told otherwise."""
    port: int = Field(8000, ge=0, le=65535)
    """Port the server binds."""
    admin_key: SecretStr | None = None
    """On the first start of a new home, becomes the admin key instead of a random one."""
    url: str | None = None
    """Where the CLI and the client find the server."""
    api_key: SecretStr | None = None
    """The key the CLI and the client send."""
    s3_endpoint_url: str | None = None
    """Endpoint of an S3-compatible server (MinIO, moto); default AWS."""
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1)
    """Largest accepted dataset upload."""
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1)
    """Largest accepted request body outside dataset uploads."""
    max_instances: int = Field(10_000, ge=1)
    """Most instances in one prediction request."""
    torch_threads: int | None = Field(None, ge=1, le=256)
    """Intra-op threads of served models; default: cores - 1, so the event loop keeps one."""
    python: str | None = None
    """Interpreter that runs training workers; default the server's own."""
    run_lease_s: float = Field(30.0, gt=0)
    """A worker's claim on a run lasts this long without a heartbeat; then the run is re-queued."""
    run_heartbeat_s: float = Field(5.0, gt=0)
    """How often a worker renews its claim (at most half the lease)."""
    run_max_attempts: int = Field(3, ge=1)
    """Attempts a run gets before a lost worker fails it."""
    allowed_hosts: Annotated[list[str] | None, NoDecode] = None
    """Host names requests may name (DNS rebinding guard), comma-separated or a JSON list;
    default the loopback names and ``host``."""
    allowed_origins: Annotated[list[str], NoDecode] = []
    """Browser origins besides the server's own that may make state-changing requests (comma-separated
    or a JSON list)."""
    encryption_key: SecretStr | None = None
    """Key for artifacts at rest (AES-GCM); unset: artifacts are stored in the clear."""
    encryption_key_file: Path | None = None
    """File holding the key for artifacts at rest (instead of ``encryption_key``): one key a line,
    the first encrypts, the others only decrypt (keys before a rotation). Mode 0600."""
    encryption_old_keys: SecretStr | None = None
    """Comma-separated keys that only decrypt: artifacts written before a key rotation."""

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, v: object, info: ValidationInfo) -> object:
        if isinstance(v, str):
            v = v.strip()
            if not v:  # set but empty: the default
                return None if info.field_name == "allowed_hosts" else []
            return json.loads(v) if v.startswith("[") else [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'modelhost.db'}"

    @property
    def resolved_artifacts_url(self) -> str:
        return self.artifacts_url or (self.home / "artifacts").as_uri()

    @property
    def profile_path(self) -> Path:
        return self.home / "profile.json"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for a worker subprocess: ours, with the resolved stores pinned."""
    import os

    secrets = ("MODELHOST_ADMIN_KEY", "MODELHOST_API_KEY")  # a worker needs neither
    env = {k: v for k, v in os.environ.items() if k not in secrets}
    env.update(
        MODELHOST_HOME=str(settings.home),
        MODELHOST_DATABASE_URL=settings.resolved_database_url,
        MODELHOST_ARTIFACTS_URL=settings.resolved_artifacts_url,
    )
    if settings.s3_endpoint_url:
        env["MODELHOST_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    return env
