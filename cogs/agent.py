"""/agent: bounded agents in their own thread, and recurring goals.

- ``/agent goal`` opens a public thread (like ``/chat start``), posts each step there as it happens (the tools run,
  their arguments, a short result) under a **Stop** button only the invoking member may press, then the answer
  with its route line. A tool that acts (a poll, a post elsewhere, reminding other people) asks that member to
  confirm first, in the thread; nothing a document or a tool result says can act on its own.
- ``/agent every schedule goal`` stores a recurring goal (a scheduled job of kind ``agent_goal``: it survives
  restarts); when due it runs unattended in its channel with the same limits, and an action that needs a
  confirmation is not run but reported. It is cancelled when its member has left or may no longer post there,
  or its channel is gone. ``/agent list`` and ``/agent cancel`` show and remove one's goals (Manage Server:
  anyone's on the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.agents import (
    AGENT_GOAL,
    MAX_GOALS_PER_USER,
    SCHEDULE_HELP,
    AgentService,
    final_text,
    parse_schedule,
    split_recurring,
    step_text,
    unconfirmed,
)
from bot.answering import UserError
from bot.app import SwitchboardBot
from bot.delivery import Ask, Delivery, wrong_channel_note
from bot.knowledge import member_can_read
from bot.replies import SAFE_MENTIONS, split_message
from bot.storage import NotFound
from cogs._targets import (
    forbidden_note,
    home_channel_id,
    interaction_target,
    missing_permissions,
    permission_note,
    role_ids,
)
from inference.agents import STOP_WORDS, Step
from inference.errors import InferenceError

if TYPE_CHECKING:
    from bot.answering import Scope
    from bot.storage import Job
    from inference.tools.base import Tool
    from inference.types import RouteDecision

log = logging.getLogger(__name__)

#: Idle minutes before Discord archives an agent's thread (a day).
AUTO_ARCHIVE_MINUTES: Final = 1440
ONLY_THE_STARTER = "Only the person who started this agent can stop it."


class StopView(discord.ui.View):
    """The Stop button under an agent's status message; only ``user_id`` may press it."""

    def __init__(self, user_id: int, stop: asyncio.Event, timeout_s: float) -> None:
        super().__init__(timeout=timeout_s)
        self.user_id = user_id
        self.stop_event = stop

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.user_id:
            await interaction.response.send_message(ONLY_THE_STARTER, ephemeral=True)
            return False
        return True

    @discord.ui.button(label="Stop", style=discord.ButtonStyle.danger)
    async def halt(self, interaction: discord.Interaction, _button: discord.ui.Button[StopView]) -> None:
        self.stop_event.set()
        self.stop()
        await interaction.response.edit_message(content="⏹️ Stopping…", view=None)


class AgentCog(commands.GroupCog, group_name="agent"):
    """Bounded agents and recurring goals."""

    def __init__(self, bot: SwitchboardBot, *, agents: AgentService, delivery: Delivery) -> None:
        self.bot = bot
        self.agents = agents
        self.delivery = delivery
        self.confirmations = bot.confirmations
        super().__init__()

    async def cog_load(self) -> None:
        self.bot.scheduler.register(AGENT_GOAL, self.run_scheduled)

    async def cog_unload(self) -> None:
        self.bot.scheduler.unregister(AGENT_GOAL)

    # -- /agent goal ----------------------------------------------------------------------------------------
    @app_commands.command(name="goal")
    @app_commands.describe(goal="What to find out or do, in a new thread (starting with 'every morning…' repeats it)")
    async def goal(self, interaction: discord.Interaction, goal: str) -> None:
        """Work towards a goal step by step with the server's tools and documents, in a thread."""
        if (recurring := split_recurring(goal)) is not None:
            # "every morning post the top three questions" is a recurring goal, as `/agent every` makes one.
            await interaction.response.defer(ephemeral=True)
            await self._schedule(interaction, *recurring)
            return
        missing = missing_permissions(interaction.app_permissions, in_thread=False, start_thread=True)
        if interaction.guild is not None and missing:
            note = permission_note(interaction.channel_id, missing)
            await interaction.response.send_message(note, ephemeral=True, allowed_mentions=SAFE_MENTIONS)
            return
        await interaction.response.defer(thinking=True)
        channel, guild, user = interaction.channel, interaction.guild, interaction.user
        if guild is None or not isinstance(channel, discord.TextChannel):
            await interaction.edit_original_response(content="Agents work in a server text channel.")
            return
        ask = Ask(guild.id, channel.id, user.id, goal, role_ids=role_ids(user))
        admitted = await self.delivery.admit(interaction_target(interaction), ask, [goal])
        if admitted is None:
            return
        scope, _ = admitted
        decision = self.agents.route(goal, scope)
        title = "Agent: " + " ".join(goal.split())
        try:
            thread = await channel.create_thread(
                name=title[:90].strip(),
                type=discord.ChannelType.public_thread,
                auto_archive_duration=AUTO_ARCHIVE_MINUTES,
            )
        except discord.Forbidden as exc:
            await interaction_target(interaction).refuse(forbidden_note(exc, channel.id, ["Create Public Threads"]))
            return
        status: discord.Message | None = None
        view: StopView | None = None
        try:
            with contextlib.suppress(discord.HTTPException):  # the starter follows the thread
                await thread.add_user(user)
            await interaction.edit_original_response(content=f"Working on it in {thread.mention}.")
            quote = f"**Goal from {discord.utils.escape_markdown(user.display_name)}:** {goal}"
            for chunk in split_message(quote):
                await thread.send(chunk, allowed_mentions=SAFE_MENTIONS)
            stop = asyncio.Event()
            limits = self.agents.limits
            view = StopView(user.id, stop, limits.wall_s + 60)
            status = await thread.send(
                f"⚙️ Working (at most {limits.max_steps} steps, {limits.wall_s:g}s, {limits.max_tokens} tokens)…",
                view=view,
                allowed_mentions=SAFE_MENTIONS,
            )
            await self._work(thread, status, view, stop, goal, scope, decision, guild, user)
        except Exception as exc:
            if isinstance(exc, discord.HTTPException):  # e.g. a moderator closed the thread to the bot: no bug
                log.warning("agent in thread %s stopped: Discord refused (%s %s)", thread.id, exc.status, exc.code)
            else:
                log.exception("agent in thread %s failed", thread.id)
            await _finish(status, "⚠️ Something went wrong and the agent stopped. Please try again later.")
            if status is None:
                with contextlib.suppress(discord.HTTPException):
                    await thread.send("⚠️ Something went wrong and the agent stopped. Please try again later.")
        except asyncio.CancelledError:  # the bot is shutting down past its grace period
            await _finish(status, "⏹️ Stopped: the bot is restarting.")
            raise
        finally:
            if view is not None:
                view.stop()

    async def _work(
        self,
        thread: discord.Thread,
        status: discord.Message,
        view: StopView,
        stop: asyncio.Event,
        goal: str,
        scope: Scope,
        decision: RouteDecision,
        guild: discord.Guild,
        user: discord.Member | discord.User,
    ) -> None:
        """Run the goal, posting each step in ``thread``, then the answer; ``status`` says when it ended."""

        async def on_step(step: Step) -> None:
            try:
                for chunk in split_message(step_text(step)):
                    await thread.send(chunk, allowed_mentions=SAFE_MENTIONS)
            except discord.HTTPException as exc:  # a step not shown is no reason to abandon the goal
                log.info("agent step %s not posted in thread %s: %s", step.number, thread.id, exc)

        async def confirm(tool: Tool, args: dict[str, Any]) -> bool:
            # Asked of the member who started the agent, in its thread: whatever asked for the action.
            return await self.confirmations.ask(thread, user.id, tool.describe_call(args))

        started = self.agents.clock()
        began = time.perf_counter()
        async with self.bot.job():
            try:
                run = await self.agents.run(
                    goal,
                    scope,
                    decision,
                    guild_id=guild.id,
                    can_read=member_can_read(user, guild),
                    on_step=on_step,
                    stop=stop,
                    confirm=confirm,
                )
            except InferenceError as exc:
                view.stop()
                await _finish(status, "⚙️ Finished: the model failed.")
                await thread.send(f"⚠️ {exc.user_text}", allowed_mentions=SAFE_MENTIONS)
                await self.agents.record(guild.id, user.id, None, decision, (time.perf_counter() - began) * 1000)
                return
            view.stop()
            await _finish(status, f"⚙️ Finished: {STOP_WORDS[run.stopped_by]}.")
            for chunk in split_message(final_text(run, self.agents.clock() - started, fallback=decision)):
                await thread.send(chunk, allowed_mentions=SAFE_MENTIONS)
            await self.agents.record(guild.id, user.id, run, decision, (time.perf_counter() - began) * 1000)

    # -- recurring goals --------------------------------------------------------------------------------------
    @app_commands.command(name="every")
    @app_commands.describe(
        schedule="hourly, daily HH:MM (UTC), or every N minutes / every N hours", goal="What to do each time"
    )
    async def every(self, interaction: discord.Interaction, schedule: str, goal: str) -> None:
        """Run a goal on a schedule in this channel (unattended: actions that need a confirmation are skipped)."""
        await interaction.response.defer(ephemeral=True)
        await self._schedule(interaction, schedule, goal)

    async def _schedule(self, interaction: discord.Interaction, schedule: str, goal: str) -> None:
        """Store a recurring goal (the interaction is already deferred, privately) and say when it first runs."""
        channel, guild, user = interaction.channel, interaction.guild, interaction.user
        if guild is None or channel is None:
            await interaction.edit_original_response(content="Recurring goals work in a server channel.")
            return
        in_thread = isinstance(channel, discord.Thread)
        missing = missing_permissions(interaction.app_permissions, in_thread=in_thread)
        if missing:  # the bot could never post the results there
            note = permission_note(channel.id, missing)
            await interaction.edit_original_response(content=note, allowed_mentions=SAFE_MENTIONS)
            return
        try:
            mine = interaction.permissions
            if not (mine.view_channel and (mine.send_messages_in_threads if in_thread else mine.send_messages)):
                # The goal posts for them here: only someone who may post here may schedule it.
                raise UserError("You can't send messages in this channel, so you can't schedule a goal to post here.")
            config = await self.bot.store.guild_config(guild.id)
            if not config.channel_allowed(home_channel_id(channel, interaction.channel_id)):
                raise UserError(wrong_channel_note(config))
            self.bot.answers.validate(goal, [], config)
            when = parse_schedule(schedule, self.bot.scheduler.now())
            pending = await self.bot.store.jobs(guild.id, kind=AGENT_GOAL, user_id=user.id)
            if len(pending) >= MAX_GOALS_PER_USER:
                raise UserError(f"You have {len(pending)} recurring goals here, the most allowed; cancel one first.")
        except UserError as exc:
            await interaction.edit_original_response(content=str(exc), allowed_mentions=SAFE_MENTIONS)
            return
        job = await self.bot.store.add_job(
            guild_id=guild.id,
            channel_id=channel.id,
            user_id=user.id,
            kind=AGENT_GOAL,
            payload={"goal": goal, "schedule": when.text},
            run_at=when.first,
            interval_s=when.interval_s,
        )
        await interaction.edit_original_response(
            content=(
                f"Recurring goal **#{job.id}** ({when.text}), first run {discord.utils.format_dt(when.first, 'R')} "
                f"in {channel.mention if hasattr(channel, 'mention') else 'this channel'}. It runs unattended: "
                "actions that need your confirmation are reported, not run. `/agent cancel` removes it."
            ),
            allowed_mentions=SAFE_MENTIONS,
        )

    @app_commands.command(name="list")
    async def list_goals(self, interaction: discord.Interaction) -> None:
        """Your recurring goals on this server."""
        await interaction.response.defer(ephemeral=True)
        if interaction.guild is None:
            await interaction.edit_original_response(content="Recurring goals live on servers.")
            return
        jobs = await self.bot.store.jobs(interaction.guild.id, kind=AGENT_GOAL, user_id=interaction.user.id)
        if not jobs:
            await interaction.edit_original_response(content=f"You have no recurring goals here. {SCHEDULE_HELP}")
            return
        lines = [
            f"**#{job.id}** · {job.payload.get('schedule', '?')} · next {discord.utils.format_dt(job.next_run_at, 'R')}"
            f" · <#{job.channel_id}> · {_short(str(job.payload.get('goal', '')))}"
            for job in jobs
        ]
        content = "\n".join(["Your recurring goals here:", *lines])
        await interaction.edit_original_response(content=split_message(content)[0], allowed_mentions=SAFE_MENTIONS)

    @app_commands.command(name="cancel")
    @app_commands.describe(id="The goal's number, from /agent list")
    async def cancel(self, interaction: discord.Interaction, id: int) -> None:
        """Cancel one of your recurring goals (with Manage Server: anyone's on this server)."""
        await interaction.response.defer(ephemeral=True)
        guild = interaction.guild
        if guild is None:
            await interaction.edit_original_response(content="Recurring goals live on servers.")
            return
        admin = interaction.permissions.manage_guild
        try:
            await self.bot.store.cancel_job(guild.id, interaction.user.id, id, kind=AGENT_GOAL, any_user=admin)
        except NotFound:
            await interaction.edit_original_response(content=f"You have no recurring goal #{id} here (`/agent list`).")
            return
        await interaction.edit_original_response(content=f"Recurring goal #{id} cancelled.")

    async def run_scheduled(self, job: Job) -> None:
        """A due recurring goal: run unattended in its channel (no confirmations: acting tools don't run).

        Cancelled when its channel is gone, or its member left or may no longer post there."""
        goal = str(job.payload.get("goal", "")).strip()
        guild = self.bot.get_guild(job.guild_id) if job.guild_id is not None else None
        if guild is None:  # an outage, or the bot left: nothing to decide from here
            log.info("recurring goal #%s skipped: its server is not available", job.id)
            return
        if not goal:
            await self._retire(job, "it has no goal")
            return
        channel = guild.get_channel_or_thread(job.channel_id)
        if channel is None:  # an archived thread is not in the cache: ask Discord
            try:
                channel = await guild.fetch_channel(job.channel_id)
            except discord.NotFound:
                await self._retire(job, "its channel is gone")
                return
            except discord.HTTPException as exc:
                log.info("recurring goal #%s skipped: channel %s unavailable (%s)", job.id, job.channel_id, exc.status)
                return
        if not isinstance(channel, discord.TextChannel | discord.Thread):
            await self._retire(job, "its channel takes no messages")
            return
        try:
            member = guild.get_member(job.user_id) or await guild.fetch_member(job.user_id)
        except discord.NotFound:
            await self._retire(job, "its member left the server")
            return
        except discord.HTTPException as exc:
            log.info("recurring goal #%s skipped: member %s not fetched (%s)", job.id, job.user_id, exc.status)
            return
        perms = channel.permissions_for(member)
        in_thread = isinstance(channel, discord.Thread)
        if not (perms.view_channel and (perms.send_messages_in_threads if in_thread else perms.send_messages)):
            await self._retire(job, "its member may no longer send messages in its channel")
            return
        scope = await self.bot.answers.scope(guild.id)
        if not scope.config.channel_allowed(home_channel_id(channel, job.channel_id)):
            log.info("recurring goal #%s skipped: the bot no longer answers in its channel", job.id)
            return
        decision = self.agents.route(goal, scope)
        started, began = self.agents.clock(), time.perf_counter()
        try:
            try:
                run = await self.agents.run(
                    goal, scope, decision, guild_id=guild.id, can_read=member_can_read(member, guild), confirm=None
                )
            except InferenceError as exc:
                await channel.send(f"⚠️ Recurring goal #{job.id}: {exc.user_text}", allowed_mentions=SAFE_MENTIONS)
                await self.agents.record(guild.id, job.user_id, None, decision, (time.perf_counter() - began) * 1000)
                return
            lines = [f"🔁 **Recurring goal #{job.id}** ({job.payload.get('schedule', '')}): {_short(goal)}"]
            lines += [step_text(step) for step in run.steps if step.results]
            skipped = unconfirmed(run)
            if skipped:
                names = ", ".join(f"`{name}`" for name in dict.fromkeys(skipped))
                lines.append(f"⚠️ Needs confirmation, not run (recurring goals run unattended): {names}")
            lines.append(final_text(run, self.agents.clock() - started, fallback=decision))
            for chunk in split_message("\n".join(lines)):
                await channel.send(chunk, allowed_mentions=SAFE_MENTIONS)
        except discord.NotFound:  # deleted while the goal ran
            await self._retire(job, "its channel is gone")
            return
        await self.agents.record(guild.id, job.user_id, run, decision, (time.perf_counter() - began) * 1000)

    async def _retire(self, job: Job, why: str) -> None:
        """Cancel a recurring goal that can't run any more (said at INFO: it is no fault of the bot's)."""
        log.info("recurring goal #%s cancelled: %s", job.id, why)
        actor = self.bot.user.id if self.bot.user is not None else job.user_id
        with contextlib.suppress(NotFound):  # cancelled meanwhile
            await self.bot.store.cancel_job(job.guild_id, actor, job.id, kind=AGENT_GOAL, any_user=True)


async def _finish(status: discord.Message | None, content: str) -> None:
    """Say on the status message how the run ended, and take its Stop button away."""
    if status is None:
        return
    try:
        await status.edit(content=content, view=None)
    except discord.HTTPException as exc:
        log.info("agent status not updated: %s", exc)


def _short(text: str, limit: int = 100) -> str:
    flat = " ".join(text.split())
    return discord.utils.escape_markdown(flat if len(flat) <= limit else flat[: limit - 1] + "…")


async def setup(bot: SwitchboardBot) -> None:
    agents = AgentService(bot.answers, bot.store, bot.tools, bot.answers.knowledge, clock=bot.clock)
    await bot.add_cog(AgentCog(bot, agents=agents, delivery=bot.delivery))
