"""The one typed settings object: environment variables and `.env`, validated once at start-up."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from inference.artifacts import default_cache_dir


class Settings(BaseSettings):
    """Operator settings (immutable). Per-server choices live in the database, not here."""

    model_config = SettingsConfigDict(
        env_prefix="SWITCHBOARD_", env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    #: The bot token. A secret: never logged, never shown in a repr or validation error.
    discord_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DISCORD_TOKEN", "SWITCHBOARD_DISCORD_TOKEN")
    )
    data_dir: Path = Path("data")
    #: Any SQLAlchemy async URL; default: a SQLite file in data_dir. Its password is masked in repr.
    database_url: str | None = None
    #: The large tier's OpenAI-compatible endpoint (``${SWITCHBOARD_LARGE_*}`` in config/models.yaml).
    large_url: str | None = None
    large_model: str | None = None
    large_api_key: SecretStr | None = None
    #: Encrypts the API keys server admins give for their own endpoints. Unset: a random key is
    #: generated once into ``data_dir/secret.key`` (keep that file with the database).
    secret_key: SecretStr | None = None
    cache_dir: Path = Field(default_factory=default_cache_dir)
    catalogue_path: Path | None = None
    routing_path: Path | None = None
    #: Sync commands to this server only (instant) instead of globally (up to an hour).
    dev_guild_id: int | None = None
    #: Admin-added endpoints may point at private/loopback addresses (only for trusted operators).
    allow_private_endpoints: bool = False
    #: Hosts admins may use over plain http or on private addresses.
    #: Comma-separated in the environment and .env (NoDecode: not parsed as JSON first).
    allowed_endpoint_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    max_prompt_chars: int = Field(4000, ge=1)
    max_attachments: int = Field(4, ge=0)
    max_attachment_bytes: int = Field(8 * 1024 * 1024, ge=1)
    max_new_tokens: int = Field(512, ge=1)
    #: One answer uses at most this many messages; a longer one ends with a note and comes as a file.
    max_reply_messages: int = Field(4, ge=1, le=10)
    #: Load the routed local models at start-up so the first request is fast.
    warm_models: bool = True
    #: Answer direct messages (with no server's settings: the defaults apply). Off: DMs get one short note.
    allow_dms: bool = True
    #: The key clients of `python -m bot serve` send (``Authorization: Bearer KEY``); required to bind beyond loopback.
    serve_api_key: SecretStr | None = None
    #: Discord shards over all processes; None: what Discord recommends (GET /gateway/bot).
    shard_count: int | None = Field(None, ge=1)
    #: The shards this process runs ("0,1" or a JSON list); None: all of them. Needs shard_count.
    shard_ids: Annotated[tuple[int, ...] | None, NoDecode] = None
    #: Keep rate-limit buckets in the database so several processes share them (always on with PostgreSQL).
    shared_rate_limits: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: Seconds between the scheduler's looks for due jobs (reminders, recurring goals); 0: no background loop.
    scheduler_poll_s: float = Field(15.0, ge=0)
    #: Seconds a Confirm / Cancel prompt waits before it counts as cancelled.
    confirm_timeout_s: float = Field(120.0, gt=0)
    #: Where the bot serves ``/health`` and ``/metrics`` (Prometheus) for operators; None: not served.
    #: Loopback by default: the numbers say how busy each server is, which is nobody else's business.
    metrics_port: int | None = Field(None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    #: The dotenv file(s) this object read (``_env_file=None`` in tests: none), for :meth:`operator_env`.
    _env_files: Any = PrivateAttr(None)

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._env_files = values.get("_env_file", self.model_config.get("env_file"))

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("discord_token", "large_api_key", "secret_key", "serve_api_key", mode="before")
    @classmethod
    def _blank_is_missing(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("allowed_endpoint_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(h.strip().lower() for h in v.split(",") if h.strip())
        return v

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _split_shard_ids(cls, v: object) -> object:
        if isinstance(v, str):
            text = v.strip()
            if not text:
                return None
            if text.startswith("["):
                return json.loads(text)
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return v

    @model_validator(mode="after")
    def _shards_fit(self) -> Self:
        if self.shard_ids is not None:
            if self.shard_count is None:
                raise ValueError("SWITCHBOARD_SHARD_IDS needs SWITCHBOARD_SHARD_COUNT")
            if not self.shard_ids or any(not 0 <= i < self.shard_count for i in self.shard_ids):
                raise ValueError(f"SWITCHBOARD_SHARD_IDS must be shard numbers from 0 to {self.shard_count - 1}")
        return self

    @property
    def uses_shared_rate_limits(self) -> bool:
        """Buckets in the database: asked for, or implied by PostgreSQL (several processes share one)."""
        return self.shared_rate_limits or make_url(self.resolved_database_url).get_backend_name() == "postgresql"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'switchboard.db'}"

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (_mask_url(value) if name == "database_url" and isinstance(value, str) else value)

    def operator_env(self) -> Mapping[str, str]:
        """The operator's environment as the catalogue sees it: ``.env`` first, the process environment over it,
        and this object's own ``SWITCHBOARD_*`` values over both (so a value in ``.env`` works exactly as one in the
        environment). Read only by operator configuration, never on behalf of a server admin."""
        return OperatorEnv(self)


class OperatorEnv(Mapping[str, str]):
    """A live view: a rotated key in the process environment is picked up at the next request."""

    def __init__(self, settings: Settings) -> None:
        env_file = settings._env_files
        files = [env_file] if isinstance(env_file, str | Path) else list(env_file or ())
        self._file: dict[str, str] = {}
        for f in files:
            if Path(f).is_file():
                self._file.update({k: v for k, v in dotenv_values(f).items() if v is not None})
        self._own: dict[str, str] = {}
        for name in ("large_url", "large_model", "large_api_key"):
            value = getattr(settings, name)
            if name in settings.model_fields_set and value is not None:
                plain = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
                self._own[f"SWITCHBOARD_{name.upper()}"] = plain

    def _merged(self) -> dict[str, str]:
        return {**self._file, **os.environ, **self._own}

    def __getitem__(self, key: str) -> str:
        return self._merged()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._merged())

    def __len__(self) -> int:
        return len(self._merged())

    def __repr__(self) -> str:
        return f"OperatorEnv({len(self)} names)"  # values may be secrets


def _mask_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"
