"""The one store for per-server state: guild config, custom models, conversations, request log, audit log.

Every method is async; every timestamp is timezone-aware UTC. The tables are in :mod:`bot.storage.schema`,
the engine and migrations in :mod:`bot.storage.engine`, the per-server settings and their rules in
:mod:`bot.storage.config`.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Self

from pydantic import ValidationError
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bot.storage.config import ROUTE_FIELDS, GuildConfig
from bot.storage.engine import DEFAULT_URL, make_engine, migrate, writer
from bot.storage.errors import AlreadyExists, NotFound
from bot.storage.schema import (
    audit_log,
    conversations,
    guild_models,
    guild_settings,
    messages,
    request_log,
    route_corrections,
    scheduled_jobs,
)
from inference.catalogue import OpenAIModel
from inference.types import ChatMessage, TaskId, Tier

log = logging.getLogger(__name__)

Role = Literal["system", "user", "assistant"]
#: Spec fields never stored for a server's endpoint: its key lives sealed in its own column.
_SERVER_SPEC_EXCLUDED = frozenset({"api_key", "api_key_env"})


# --- records handed to callers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    guild_id: int
    actor_id: int
    action: str
    details: dict[str, Any]
    at: datetime


@dataclass(frozen=True, slots=True)
class CustomModel:
    guild_id: int
    name: str
    spec: OpenAIModel
    created_by: int
    created_at: datetime
    #: The endpoint's API key as sealed by bot/keybox.py; None = keyless.
    sealed_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    thread_id: int
    guild_id: int
    channel_id: int
    user_id: int
    tier: Tier
    model: str
    system_prompt: str | None
    created_at: datetime
    closed_at: datetime | None

    @property
    def closed(self) -> bool:
        return self.closed_at is not None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    role: Role
    content: str
    tokens: int
    created_at: datetime

    def as_chat(self) -> ChatMessage:
        return ChatMessage(role=self.role, content=self.content)


@dataclass(frozen=True, slots=True)
class Stats:
    total: int
    #: (task, tier) -> requests.
    by_task_tier: dict[tuple[str, str], int]
    #: Fraction of requests answered by the small tier; 0.0 when there were none.
    small_share: float
    #: Model -> median latency of its successful requests.
    median_latency_ms: dict[str, float]
    failures: int
    fallbacks: int


#: Longest request text kept with a correction: enough to embed (the classifier reads a bounded window anyway).
CORRECTION_TEXT_CHARS = 2000


@dataclass(frozen=True)
class Correction:
    """A user's correction of one answer's route: ``kind`` "larger" (they preferred the large tier) or "task"
    (``task`` is the one they picked instead of ``routed_task``)."""

    id: int
    guild_id: int
    channel_id: int | None
    user_id: int
    text: str
    kind: Literal["larger", "task"]
    routed_task: str
    routed_tier: str
    task: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Job:
    """A scheduled job (bot/scheduler.py): ``kind`` names its handler, ``payload`` its data (JSON).

    ``interval_s`` None: runs once (``done`` after its one claim); else every ``interval_s`` seconds from
    ``next_run_at``. A job returned by :meth:`Store.claim_due_jobs` carries ``due_at``, the slot it fires for.
    """

    id: int
    guild_id: int | None
    channel_id: int
    user_id: int
    kind: str
    payload: dict[str, Any]
    next_run_at: datetime
    interval_s: int | None
    created_at: datetime
    cancelled: bool = False
    done: bool = False
    runs: int = 0
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    due_at: datetime | None = None

    @property
    def recurring(self) -> bool:
        return self.interval_s is not None


#: Longest job kind (a handler's name) and claimer name.
_JOB_KIND_CHARS, _JOB_OWNER_CHARS = 32, 100


def _next_slot(due: datetime, interval_s: int, now: datetime) -> datetime:
    """The first slot after ``now`` on ``due``'s grid: missed slots (the bot was down) are skipped, not replayed."""
    step = timedelta(seconds=interval_s)
    missed = int((now - due) / step) + 1 if now >= due else 1
    return due + missed * step


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- the store --------------------------------------------------------------------------------------------


class Store:
    """Open with ``await Store.open(url)`` (or ``async with await Store.open(url) as store``)."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._write = writer(engine)  # every write transaction goes through this
        self._clock = clock
        # Config writes are read-modify-write of one JSON row: serialise them within the process.
        self._config_lock = asyncio.Lock()

    @classmethod
    async def open(cls, url: str | URL = DEFAULT_URL, *, clock: Callable[[], datetime] = _utcnow) -> Store:
        await migrate(url)
        return cls(make_engine(url), clock=clock)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def ping(self) -> None:
        """One round trip to the database (the health endpoint's check); raises when it can't be reached."""
        async with self._engine.connect() as conn:
            await conn.execute(select(1))

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Store({self._engine.url!r})"  # SQLAlchemy masks any password

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    async def _audit(
        self, conn: AsyncConnection, guild_id: int, actor_id: int, action: str, details: dict[str, Any]
    ) -> None:
        row = dict(guild_id=guild_id, actor_id=actor_id, action=action, details=details, at=self._now())
        await conn.execute(audit_log.insert().values(**row))

    # guild config

    async def _stored_config(
        self, conn: AsyncConnection, guild_id: int, *, lock: bool = False
    ) -> dict[str, Any] | None:
        query = select(guild_settings.c.data).where(guild_settings.c.guild_id == guild_id)
        data = (await conn.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
        return dict(data) if data is not None else None

    async def guild_config(self, guild_id: int) -> GuildConfig:
        async with self._engine.connect() as conn:
            return GuildConfig.from_stored(guild_id, await self._stored_config(conn, guild_id) or {})

    async def update_guild_config(self, guild_id: int, actor_id: int, action: str, **changes: Any) -> GuildConfig:
        """Validate, persist and audit in one transaction; an invalid change raises pydantic's
        ValidationError (unknown fields included) and writes nothing. A dict or list value replaces the
        stored one: to change one entry, use set_task_model / set_channel_prompt (no lost updates)."""
        if (error := GuildConfig.unknown_fields_error(changes)) is not None:
            raise error
        return await self._change_config(guild_id, actor_id, action, lambda _: changes)

    async def set_task_model(self, guild_id: int, actor_id: int, task: TaskId, model: str | None) -> GuildConfig:
        """Route one task to ``model``; None = back to the default."""

        def edit(config: GuildConfig) -> dict[str, Any]:
            task_models: dict[str, str] = {k: v for k, v in config.task_models.items() if k != task}
            return {"task_models": task_models | ({task: model} if model is not None else {})}

        return await self._change_config(guild_id, actor_id, "route.set" if model else "route.clear", edit)

    async def set_channel_prompt(
        self, guild_id: int, actor_id: int, channel_id: int, prompt: str | None
    ) -> GuildConfig:
        """One channel's system prompt; None = back to the default."""

        def edit(config: GuildConfig) -> dict[str, Any]:
            prompts = {k: v for k, v in config.channel_system_prompts.items() if k != channel_id}
            return {"channel_system_prompts": prompts | ({channel_id: prompt} if prompt is not None else {})}

        return await self._change_config(guild_id, actor_id, "prompt.set" if prompt else "prompt.clear", edit)

    async def set_task_framing(
        self, guild_id: int, actor_id: int, task: TaskId, changes: dict[str, Any] | None
    ) -> GuildConfig:
        """Merge ``changes`` into one task's framing; None = back to the pipeline's defaults. Read and written in
        one transaction, so two admins changing framings at once both keep their change."""

        def edit(config: GuildConfig) -> dict[str, Any]:
            framing = {t: f.model_dump(exclude_none=True) for t, f in config.task_framing.items() if t != task}
            if changes is not None:
                merged = {
                    **(config.task_framing[task].model_dump(exclude_none=True) if task in config.task_framing else {}),
                    **changes,
                }
                framing[task] = merged
            return {"task_framing": framing}

        return await self._change_config(guild_id, actor_id, "tasks.set" if changes else "tasks.reset", edit)

    async def set_task_threshold(
        self, guild_id: int, actor_id: int, task: TaskId, threshold: float | None
    ) -> GuildConfig:
        """One task's escalation threshold; None = back to the server's (or the policy's) threshold."""

        def edit(config: GuildConfig) -> dict[str, Any]:
            thresholds = {t: v for t, v in config.task_thresholds.items() if t != task}
            return {"task_thresholds": thresholds | ({task: threshold} if threshold is not None else {})}

        action = "threshold.task.set" if threshold is not None else "threshold.task.clear"
        return await self._change_config(guild_id, actor_id, action, edit)

    async def set_feedback_buttons(
        self, guild_id: int, actor_id: int, enabled: bool, channel_id: int | None = None
    ) -> GuildConfig:
        """Turn the answer buttons on or off for the server, or (``channel_id``) for one channel."""

        def edit(config: GuildConfig) -> dict[str, Any]:
            if channel_id is None:
                return {"feedback_buttons": enabled}
            off = [c for c in config.feedback_off_channels if c != channel_id]
            return {"feedback_off_channels": off if enabled else [*off, channel_id]}

        return await self._change_config(guild_id, actor_id, "feedback.on" if enabled else "feedback.off", edit)

    async def set_tool_enabled(self, guild_id: int, actor_id: int, name: str, enabled: bool) -> GuildConfig:
        """Enable or disable one tool on the server (read and written in one transaction)."""

        def edit(config: GuildConfig) -> dict[str, Any]:
            off = [t for t in config.disabled_tools if t != name]
            return {"disabled_tools": off if enabled else [*off, name]}

        return await self._change_config(guild_id, actor_id, "tools.enable" if enabled else "tools.disable", edit)

    async def reset_guild_routes(self, guild_id: int, actor_id: int) -> GuildConfig:
        """Back to the routing policy: task models and threshold return to their defaults."""
        return await self._change_config(guild_id, actor_id, "routes.reset", lambda _: {}, unset=ROUTE_FIELDS)

    async def _change_config(
        self,
        guild_id: int,
        actor_id: int,
        action: str,
        edit: Callable[[GuildConfig], dict[str, Any]],
        unset: tuple[str, ...] = (),
    ) -> GuildConfig:
        """Read, edit, validate, write and audit in one write transaction (no lost updates)."""
        async with self._config_lock, self._write.begin() as conn:
            # The row first, if absent: on PostgreSQL, FOR UPDATE locks only rows that exist, so two processes
            # changing a new server's settings at once would both insert. A validation error rolls this back.
            if (ensure := _insert_if_absent(conn, guild_id=guild_id, data={}, updated_at=self._now())) is not None:
                await conn.execute(ensure)
            stored = await self._stored_config(conn, guild_id, lock=True)
            before = GuildConfig.from_stored(guild_id, stored or {})
            changes = edit(before)
            base = {k: v for k, v in before.model_dump().items() if k not in unset}
            after = GuildConfig.model_validate({**base, **changes})  # raises before any write
            old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
            keys = [*changes, *(k for k in unset if k not in changes)]
            data = {k: v for k, v in (stored or {}).items() if k not in unset} | {k: new[k] for k in changes}
            values = dict(data=data, updated_at=self._now())
            if stored is None:  # a database without INSERT ... ON CONFLICT (neither SQLite nor PostgreSQL)
                await conn.execute(guild_settings.insert().values(guild_id=guild_id, **values))
            else:
                where = guild_settings.c.guild_id == guild_id
                await conn.execute(guild_settings.update().where(where).values(**values))
            details = {"changes": {k: new[k] for k in keys}, "previous": {k: old[k] for k in keys}}
            await self._audit(conn, guild_id, actor_id, action, details)
        return after

    # custom models

    async def add_model(self, guild_id: int, actor_id: int, name: str, spec: OpenAIModel) -> CustomModel:
        name = name.strip()
        if not 0 < len(name) <= 100:
            raise ValueError("model name must be 1 to 100 characters")
        spec_json = spec.model_dump(mode="json", exclude=set(_SERVER_SPEC_EXCLUDED))
        model = CustomModel(guild_id, name, OpenAIModel.model_validate(spec_json), actor_id, self._now())
        row = dict(guild_id=guild_id, name=name, spec=spec_json)
        row |= dict(created_by=actor_id, created_at=model.created_at)
        try:
            async with self._write.begin() as conn:
                await conn.execute(guild_models.insert().values(**row))
                await self._audit(conn, guild_id, actor_id, "model.add", {"name": name, "spec": spec_json})
        except IntegrityError:
            raise AlreadyExists(f"this server already has a model named {name!r}") from None
        return model

    async def remove_model(self, guild_id: int, actor_id: int, name: str) -> None:
        where = (guild_models.c.guild_id == guild_id) & (guild_models.c.name == name)
        async with self._write.begin() as conn:
            if (await conn.execute(guild_models.delete().where(where))).rowcount == 0:
                raise NotFound(f"this server has no model named {name!r}")
            await self._audit(conn, guild_id, actor_id, "model.remove", {"name": name})

    async def list_models(self, guild_id: int) -> list[CustomModel]:
        query = select(guild_models).where(guild_models.c.guild_id == guild_id).order_by(guild_models.c.name)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        models = []
        for r in rows:
            # Older rows may name an environment variable: a server's endpoint never reads the operator's.
            stored = {k: v for k, v in r["spec"].items() if k not in _SERVER_SPEC_EXCLUDED}
            try:
                spec = OpenAIModel.model_validate(stored)
            except ValidationError:
                log.warning("guild %s: stored model %r no longer valid, skipped", guild_id, r["name"])
                continue
            models.append(CustomModel(r["guild_id"], r["name"], spec, r["created_by"], r["created_at"], r["api_key"]))
        return models

    async def set_model_key(self, guild_id: int, actor_id: int, name: str, sealed: bytes | None) -> None:
        """Store (or with None, clear) the sealed API key of this server's model ``name``."""
        where = (guild_models.c.guild_id == guild_id) & (guild_models.c.name == name)
        async with self._write.begin() as conn:
            if (await conn.execute(guild_models.update().where(where).values(api_key=sealed))).rowcount == 0:
                raise NotFound(f"this server has no model named {name!r}")
            # That a key was set or cleared, never the key.
            await self._audit(conn, guild_id, actor_id, "model.key", {"name": name, "set": sealed is not None})

    # conversations

    async def create_conversation(
        self,
        thread_id: int,
        guild_id: int,
        channel_id: int,
        user_id: int,
        tier: Tier,
        model: str,
        system_prompt: str | None = None,
    ) -> Conversation:
        conv = Conversation(
            thread_id, guild_id, channel_id, user_id, Tier(tier), model, system_prompt, self._now(), None
        )
        row = {k: getattr(conv, k) for k in conversations.c.keys()}
        try:
            async with self._write.begin() as conn:
                await conn.execute(conversations.insert().values(**row))
        except IntegrityError:
            raise AlreadyExists(f"thread {thread_id} already has a conversation") from None
        return conv

    async def get_conversation(self, thread_id: int) -> Conversation | None:
        query = select(conversations).where(conversations.c.thread_id == thread_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().one_or_none()
        return None if row is None else Conversation(**{**row, "tier": Tier(row["tier"])})

    async def _update_conversation(self, thread_id: int, **values: Any) -> None:
        where = conversations.c.thread_id == thread_id
        async with self._write.begin() as conn:
            if (await conn.execute(conversations.update().where(where).values(**values))).rowcount == 0:
                raise NotFound(f"no conversation in thread {thread_id}")

    async def set_conversation_tier(self, thread_id: int, tier: Tier, model: str) -> None:
        await self._update_conversation(thread_id, tier=Tier(tier).value, model=model)

    async def close_conversation(self, thread_id: int) -> None:
        """Idempotent: a second close keeps the first time."""
        where = (conversations.c.thread_id == thread_id) & conversations.c.closed_at.is_(None)
        async with self._write.begin() as conn:
            result = await conn.execute(conversations.update().where(where).values(closed_at=self._now()))
        if result.rowcount:
            return
        if await self.get_conversation(thread_id) is None:
            raise NotFound(f"no conversation in thread {thread_id}")

    async def add_message(self, thread_id: int, role: Role, content: str, tokens: int) -> StoredMessage:
        at = self._now()
        exists = select(conversations.c.thread_id).where(conversations.c.thread_id == thread_id)
        async with self._write.begin() as conn:
            if (await conn.execute(exists)).first() is None:
                raise NotFound(f"no conversation in thread {thread_id}")
            row = dict(conversation_id=thread_id, role=role, content=content, tokens=tokens, created_at=at)
            message_id = (await conn.execute(messages.insert().values(**row).returning(messages.c.id))).scalar_one()
        return StoredMessage(message_id, role, content, tokens, at)

    async def history(self, thread_id: int, limit: int | None = None) -> list[StoredMessage]:
        """Oldest first; with ``limit``, the latest ``limit`` messages."""
        cols = (messages.c.id, messages.c.role, messages.c.content, messages.c.tokens, messages.c.created_at)
        query = select(*cols).where(messages.c.conversation_id == thread_id).order_by(messages.c.id.desc())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query if limit is None else query.limit(limit))).all()
        return [StoredMessage(*r) for r in reversed(rows)]

    # request log and stats

    async def record_request(
        self,
        guild_id: int,
        user_id: int,
        task: str,
        tier: Tier,
        model: str,
        latency_ms: float,
        ok: bool,
        fallback: bool,
        at: datetime | None = None,
    ) -> None:
        row = dict(guild_id=guild_id, user_id=user_id, task=task, tier=Tier(tier).value, model=model)
        row |= dict(latency_ms=round(latency_ms), ok=ok, fallback=fallback, at=at or self._now())
        async with self._write.begin() as conn:
            await conn.execute(request_log.insert().values(**row))

    async def stats(self, guild_id: int, since: datetime | None = None) -> Stats:
        where = request_log.c.guild_id == guild_id
        if since is not None:
            where &= request_log.c.at >= since
        c = request_log.c
        counts = select(c.task, c.tier, func.count()).where(where).group_by(c.task, c.tier)
        flags = select(func.count(), c.ok, c.fallback).where(where).group_by(c.ok, c.fallback)
        latencies = select(c.model, c.latency_ms).where(where & c.ok)
        async with self._engine.connect() as conn:
            by_task_tier = {(t, tier): n for t, tier, n in (await conn.execute(counts)).all()}
            flag_rows = (await conn.execute(flags)).all()
            per_model: dict[str, list[int]] = defaultdict(list)
            for model, ms in (await conn.execute(latencies)).all():
                per_model[model].append(ms)
        total = sum(by_task_tier.values())
        small = sum(n for (_, tier), n in by_task_tier.items() if tier == Tier.SMALL.value)
        return Stats(
            total=total,
            by_task_tier=by_task_tier,
            small_share=small / total if total else 0.0,
            median_latency_ms={m: float(statistics.median(v)) for m, v in sorted(per_model.items())},
            failures=sum(n for n, ok, _ in flag_rows if not ok),
            fallbacks=sum(n for n, _, fb in flag_rows if fb),
        )

    # route corrections

    async def add_correction(
        self,
        guild_id: int,
        user_id: int,
        text: str,
        *,
        kind: Literal["larger", "task"],
        routed_task: str,
        routed_tier: Tier,
        task: str,
        channel_id: int | None = None,
    ) -> Correction:
        row: dict[str, Any] = dict(guild_id=guild_id, channel_id=channel_id, user_id=user_id)
        row |= dict(text=text[:CORRECTION_TEXT_CHARS], kind=kind, routed_task=routed_task, task=task)
        row |= dict(routed_tier=Tier(routed_tier).value, at=self._now())
        async with self._write.begin() as conn:
            result = await conn.execute(route_corrections.insert().values(**row))
            key = result.inserted_primary_key
        assert key is not None
        return Correction(id=int(key[0]), **row)

    async def corrections(self, guild_id: int, limit: int | None = None) -> list[Correction]:
        """Newest first."""
        c = route_corrections.c
        query = select(route_corrections).where(c.guild_id == guild_id).order_by(c.id.desc())
        if limit is not None:
            query = query.limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Correction(**dict(r)) for r in rows]

    async def remove_correction(self, guild_id: int, actor_id: int, correction_id: int) -> Correction:
        """Undo one correction (audited); NotFound when this server has no such correction."""
        c = route_corrections.c
        where = (c.guild_id == guild_id) & (c.id == correction_id)
        async with self._write.begin() as conn:
            row = (await conn.execute(select(route_corrections).where(where))).mappings().first()
            if row is None:
                raise NotFound(f"this server has no correction #{correction_id}")
            await conn.execute(route_corrections.delete().where(where))
            details = {"id": correction_id, "kind": row["kind"], "task": row["task"]}
            await self._audit(conn, guild_id, actor_id, "correction.remove", details)
        return Correction(**dict(row))

    async def preference(self, guild_id: int, since: datetime | None = None) -> dict[str, tuple[int, int]]:
        """Per task: (answers, times a user asked the larger model for one) - the signal that a threshold is wrong."""
        where = request_log.c.guild_id == guild_id
        cwhere = (route_corrections.c.guild_id == guild_id) & (route_corrections.c.kind == "larger")
        if since is not None:
            where &= request_log.c.at >= since
            cwhere &= route_corrections.c.at >= since
        answers = select(request_log.c.task, func.count()).where(where).group_by(request_log.c.task)
        larger = select(route_corrections.c.routed_task, func.count()).where(cwhere)
        larger = larger.group_by(route_corrections.c.routed_task)
        async with self._engine.connect() as conn:
            counts = {t: n for t, n in (await conn.execute(answers)).all()}
            asked = {t: n for t, n in (await conn.execute(larger)).all()}
        return {t: (counts.get(t, 0), asked.get(t, 0)) for t in sorted(set(counts) | set(asked))}

    # scheduled jobs

    async def add_job(
        self,
        *,
        guild_id: int | None,
        channel_id: int,
        user_id: int,
        kind: str,
        payload: dict[str, Any],
        run_at: datetime,
        interval_s: int | None,
    ) -> Job:
        """Schedule ``kind`` to run at ``run_at`` (aware), then every ``interval_s`` seconds if given."""
        if not 0 < len(kind) <= _JOB_KIND_CHARS:
            raise ValueError(f"job kind must be 1 to {_JOB_KIND_CHARS} characters")
        if run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware")
        if interval_s is not None and interval_s < 1:
            raise ValueError("interval_s must be at least 1 second (or None: once)")
        row: dict[str, Any] = dict(guild_id=guild_id, channel_id=channel_id, user_id=user_id, kind=kind)
        row |= dict(payload=payload, next_run_at=run_at.astimezone(UTC), interval_s=interval_s)
        row |= dict(created_at=self._now(), cancelled=False, done=False, runs=0)
        async with self._write.begin() as conn:
            job_id = (
                await conn.execute(scheduled_jobs.insert().values(**row).returning(scheduled_jobs.c.id))
            ).scalar_one()
        return Job(id=int(job_id), **row)

    async def get_job(self, job_id: int) -> Job | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(scheduled_jobs).where(scheduled_jobs.c.id == job_id))).mappings().first()
        return None if row is None else Job(**dict(row))

    async def jobs(
        self, guild_id: int | None, *, kind: str | None = None, user_id: int | None = None, or_target: bool = False
    ) -> list[Job]:
        """A server's (None: direct messages') pending jobs, soonest first: neither cancelled nor done.

        ``user_id``: only that user's; with ``or_target``, also those whose payload's ``target_user_id`` is them
        (reminders someone else set for them)."""
        c = scheduled_jobs.c
        where = (c.guild_id.is_(None) if guild_id is None else c.guild_id == guild_id) & ~c.cancelled & ~c.done
        if kind is not None:
            where &= c.kind == kind
        if user_id is not None:
            where &= _mine(user_id, or_target)
        query = select(scheduled_jobs).where(where).order_by(c.next_run_at, c.id)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Job(**dict(r)) for r in rows]

    async def cancel_job(
        self,
        guild_id: int | None,
        actor_id: int,
        job_id: int,
        *,
        kind: str | None = None,
        any_user: bool = False,
        or_target: bool = False,
    ) -> Job:
        """Cancel a pending job of ``actor_id`` (``any_user``: anyone's, for an admin; ``or_target``: also one whose
        payload's ``target_user_id`` is the actor) of ``kind`` (None: any) on this server, in one guarded
        statement; NotFound when there is no such pending job. Audited on a server."""
        c = scheduled_jobs.c
        where = (c.id == job_id) & (c.guild_id.is_(None) if guild_id is None else c.guild_id == guild_id)
        where &= ~c.cancelled & ~c.done
        if kind is not None:
            where &= c.kind == kind
        if not any_user:
            where &= _mine(actor_id, or_target)
        async with self._write.begin() as conn:
            row = (await conn.execute(select(scheduled_jobs).where(where))).mappings().first()
            if (
                row is None
                or (await conn.execute(scheduled_jobs.update().where(where).values(cancelled=True))).rowcount != 1
            ):
                raise NotFound(f"you have no pending job #{job_id} here")
            if guild_id is not None:
                details = {"id": job_id, "kind": row["kind"], "user_id": row["user_id"]}
                await self._audit(conn, guild_id, actor_id, "job.cancel", details)
        return Job(**{**dict(row), "cancelled": True})

    async def claim_due_jobs(
        self,
        now: datetime,
        owner: str,
        limit: int = 20,
        *,
        kinds: Collection[str] | None = None,
        shards: tuple[int, Collection[int]] | None = None,
    ) -> list[Job]:
        """Claim up to ``limit`` jobs due at ``now`` for ``owner``; each job is claimed by one caller only.

        Each claim is one conditional UPDATE (``WHERE id = ? AND runs = <read>``): of several processes on one
        database, exactly one sees a row changed, the others skip the job. The same statement marks a one-shot
        job done, or moves a recurring one to its next slot after ``now``. A job is fired at most once per slot:
        a process that dies after claiming loses that run (a reminder is better missed than repeated).
        ``kinds``: only jobs this process has handlers for (None: any). ``shards``: ``(shard_count, shard_ids)``
        of a process running only some shards: only jobs of the servers on them (Discord's
        ``(guild_id >> 22) % shard_count``; direct messages are shard 0), so each process fires its own.
        A database error after some claims stops claiming and returns those (they are already marked claimed).
        """
        now = now.astimezone(UTC)
        c = scheduled_jobs.c
        where = (c.next_run_at <= now) & ~c.cancelled & ~c.done
        if kinds is not None:
            if not kinds:
                return []
            where &= c.kind.in_(list(kinds))
        if shards is not None:
            count, ids = shards
            # guild_id >> 22 as integer division: the same SQL on SQLite and PostgreSQL.
            where &= ((func.coalesce(c.guild_id, 0) // (1 << 22)) % count).in_(sorted(ids))
        query = select(scheduled_jobs).where(where).order_by(c.next_run_at, c.id).limit(limit)
        async with self._engine.connect() as conn:
            due = [Job(**dict(r)) for r in (await conn.execute(query)).mappings().all()]
        claimed: list[Job] = []
        owner = owner[:_JOB_OWNER_CHARS]
        for job in due:
            once = job.interval_s is None
            nxt = job.next_run_at if once else _next_slot(job.next_run_at, job.interval_s or 0, now)
            values = dict(next_run_at=nxt, done=once, runs=job.runs + 1, claimed_by=owner, claimed_at=now)
            guard = (c.id == job.id) & (c.runs == job.runs) & ~c.cancelled & ~c.done
            try:
                async with self._write.begin() as conn:
                    if (await conn.execute(scheduled_jobs.update().where(guard).values(**values))).rowcount != 1:
                        continue  # another process claimed (or someone cancelled) it in between
            except Exception:
                # Those claimed so far are marked in the database: returning them is the only way they run.
                log.exception("claiming job #%s failed; %d claimed jobs returned, the rest wait", job.id, len(claimed))
                break
            claimed.append(Job(**{**_job_fields(job), **values, "due_at": job.next_run_at}))
        return claimed

    # audit log

    async def audit(self, guild_id: int, limit: int = 25) -> list[AuditEntry]:
        """Newest first."""
        query = select(audit_log).where(audit_log.c.guild_id == guild_id).order_by(audit_log.c.id.desc())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).mappings().all()
        return [AuditEntry(**r) for r in rows]


def _insert_if_absent(conn: AsyncConnection, **row: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` of a guild_settings row in the connection's dialect (None if it has
    no such statement)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(guild_settings).values(**row).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(guild_settings).values(**row).on_conflict_do_nothing()
    return None


def _mine(user_id: int, or_target: bool) -> ColumnElement[bool]:
    """Jobs ``user_id`` set (``or_target``: or whose payload names them as ``target_user_id``)."""
    c = scheduled_jobs.c
    own: ColumnElement[bool] = c.user_id == user_id
    return own | (c.payload["target_user_id"].as_integer() == user_id) if or_target else own


def _job_fields(job: Job) -> dict[str, Any]:
    return {f: getattr(job, f) for f in Job.__dataclass_fields__}
