"""One server's settings, with their defaults declared once (as in Red-DiscordBot's Config), and the rules
that read them: where the bot answers, which routes the server overrides, which system prompt a channel
has, who skips the rate limit. Every caller asks the config; none re-implements a rule.

A new per-server setting is a field here (with its default and bounds): it needs no migration, since the
store keeps only the fields an admin set, as JSON, and reads unknown or invalid stored keys leniently.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.catalogue import Catalogue, RoutingOverrides
from inference.types import TaskId

log = logging.getLogger(__name__)

#: The fields ``/route reset`` returns to their defaults.
ROUTE_FIELDS = ("task_models", "threshold", "task_thresholds")


class TaskFraming(BaseModel):
    """A server's changes to one task's framing (``/tasks set``); None keeps the pipeline's default."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    system: str | None = Field(default=None, min_length=1, max_length=4000)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_new_tokens: int | None = Field(default=None, ge=1, le=4096)


class GuildConfig(BaseModel):
    """One server's settings. Missing values mean the default below."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    #: Task id -> model name, on top of the routing policy (see :meth:`routing_overrides`).
    task_models: dict[TaskId, Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=dict)
    #: Escalation threshold override; None = the routing policy's.
    threshold: float | None = Field(default=None, ge=0, le=1)
    #: Per-task escalation thresholds (over ``threshold``), e.g. tuned from how often users asked the larger model.
    task_thresholds: dict[TaskId, Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=dict)
    channel_system_prompts: dict[int, Annotated[str, Field(max_length=4000)]] = Field(default_factory=dict)
    #: Channels where the bot answers; empty = everywhere.
    allowed_channels: list[int] = Field(default_factory=list)
    #: Per-user token bucket: refill rate and bucket size. A burst of 8 lets a quick back-and-forth through.
    rate_limit_per_minute: int = Field(default=20, ge=1, le=600)
    rate_limit_burst: int = Field(default=8, ge=1, le=100)
    #: Members with any of these roles are never rate limited.
    exempt_roles: list[int] = Field(default_factory=list, max_length=100)
    max_prompt_chars: int = Field(default=4000, ge=1, le=100_000)
    #: Task id -> the server's framing for it (system text, temperature, length), on top of the pipeline's.
    task_framing: dict[TaskId, TaskFraming] = Field(default_factory=dict)
    #: "Ask the larger model" / "Wrong task?" under answers (cogs/feedback.py): on unless turned off for the server,
    #: or for the channels listed.
    feedback_buttons: bool = True
    feedback_off_channels: list[int] = Field(default_factory=list, max_length=500)
    #: Tools (``/tools``) the server turned off: never offered to a model nor run here. Names, so a tool added
    #: later is on by default, and a stored name whose tool is gone is ignored.
    disabled_tools: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=200
    )

    # --- the rules --------------------------------------------------------------------------------------

    def routing_overrides(self, catalogue: Catalogue | None = None) -> RoutingOverrides:
        """The server's changes to the routing policy. With ``catalogue`` (the server's view of the models),
        a task model it does not know (an endpoint removed since) is left out: the policy's model serves."""
        task_models = self.task_models
        if catalogue is not None:
            task_models = {t: m for t, m in task_models.items() if m in catalogue.models}
        return RoutingOverrides(task_models=task_models, threshold=self.threshold, task_thresholds=self.task_thresholds)

    def channel_allowed(self, channel_id: int | None) -> bool:
        """Whether the bot answers in ``channel_id`` (a thread's parent; None, where there is none, is
        allowed only when the server allows every channel)."""
        return not self.allowed_channels or channel_id in self.allowed_channels

    def framing_for(self, task: TaskId) -> dict[str, Any]:
        """What the server set for ``task`` (only the fields it set; empty when none)."""
        framing = self.task_framing.get(task)
        return {} if framing is None else framing.model_dump(exclude_none=True)

    def feedback_buttons_on(self, channel_id: int | None) -> bool:
        return self.feedback_buttons and channel_id not in self.feedback_off_channels

    def system_prompt_for(self, channel_id: int) -> str | None:
        return self.channel_system_prompts.get(channel_id)

    def rate_limit_exempt(self, role_ids: Iterable[int]) -> bool:
        """Whether a member with these roles skips the rate limit."""
        return not set(role_ids).isdisjoint(self.exempt_roles)

    # --- reading and checking stored values ------------------------------------------------------------

    @classmethod
    def from_stored(cls, guild_id: int, data: dict[str, Any]) -> GuildConfig:
        """Lenient read: unknown keys are ignored, invalid stored values fall back to their defaults."""
        known = {k: v for k, v in data.items() if k in cls.model_fields}
        try:
            return cls.model_validate(known)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
            # Field names only: values may be prompt text.
            log.warning("guild %s: stored config fields %s invalid, using defaults", guild_id, sorted(bad))
            return cls.model_validate({k: v for k, v in known.items() if k not in bad})

    @classmethod
    def unknown_fields_error(cls, changes: dict[str, Any]) -> ValidationError | None:
        """A ValidationError naming the keys of ``changes`` that are no field here; None when all are."""
        unknown = [k for k in changes if k not in cls.model_fields]
        if not unknown:
            return None
        return ValidationError.from_exception_data(
            cls.__name__, [{"type": "extra_forbidden", "loc": (k,), "input": changes[k]} for k in unknown]
        )
