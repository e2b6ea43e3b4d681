"""The one typed settings object: environment variables and `.env`, validated once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inference.sources import default_cache_dir


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
    #: Any SQLAlchemy async URL; default: a SQLite file in data_dir.
    database_url: str | None = None
    cache_dir: Path = Field(default_factory=default_cache_dir)
    catalogue_path: Path | None = None
    routing_path: Path | None = None
    #: Sync commands to this server only (instant) instead of globally (up to an hour).
    dev_guild_id: int | None = None
    #: Admin-added endpoints may point at private/loopback addresses (only for trusted operators).
    allow_private_endpoints: bool = False
    #: Hosts admins may use over plain http or on private addresses.
    allowed_endpoint_hosts: tuple[str, ...] = ()
    max_prompt_chars: int = Field(4000, ge=1)
    max_attachments: int = Field(4, ge=0)
    max_attachment_bytes: int = Field(8 * 1024 * 1024, ge=1)
    max_new_tokens: int = Field(512, ge=1)
    #: Load the routed local models at start-up so the first request is fast.
    warm_models: bool = True
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v

    @field_validator("discord_token", mode="before")
    @classmethod
    def _blank_is_missing(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("allowed_endpoint_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, v: object) -> object:
        if isinstance(v, str):
            return tuple(h.strip().lower() for h in v.split(",") if h.strip())
        return v

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'switchboard.db'}"
