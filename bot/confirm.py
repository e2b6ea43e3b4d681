"""Confirm / Cancel buttons: nothing that speaks for the bot elsewhere runs until the person who asked says yes.

``await bot.confirmations.ask(where, user_id, description)`` posts ``description`` with two buttons in ``where`` (a
channel, or an interaction: then as its follow-up) and returns True only when ``user_id`` presses Confirm. Cancel,
the time limit, a failure to post, or the bot shutting down all mean no. Anyone else pressing a button gets a
private refusal and changes nothing. The message then says what was decided, without buttons.

:meth:`Confirmations.for_tools` adapts it to :data:`inference.tools.base.Confirm`, for the tool loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord

from bot.replies import SAFE_MENTIONS

if TYPE_CHECKING:
    from inference.tools.base import Confirm, Tool

log = logging.getLogger(__name__)

#: Seconds a confirmation waits for its button before it counts as cancelled.
CONFIRM_TIMEOUT_S = 120.0
ONLY_THE_ASKER = "Only the person who asked can confirm or cancel this."
Sleep = Callable[[float], Awaitable[None]]
Where = discord.abc.Messageable | discord.Interaction
#: Longest description shown (Discord allows 2000 characters in a message).
_MAX_DESCRIPTION = 1500


class ConfirmView(discord.ui.View):
    """The two buttons; only ``user_id`` may press them. ``decision`` resolves to True (Confirm) or False."""

    def __init__(self, user_id: int, description: str) -> None:
        super().__init__(timeout=None)  # Confirmations times out on its own (injectable) clock
        self.user_id = user_id
        self.description = description
        self.decision: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.user_id:
            await interaction.response.send_message(ONLY_THE_ASKER, ephemeral=True)
            return False
        return True

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.success)
    async def confirm(self, interaction: discord.Interaction, _button: discord.ui.Button[ConfirmView]) -> None:
        await self._decide(interaction, True, f"✅ Confirmed: {self.description}")

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, _button: discord.ui.Button[ConfirmView]) -> None:
        await self._decide(interaction, False, f"❌ Cancelled: {self.description}")

    async def _decide(self, interaction: discord.Interaction, yes: bool, content: str) -> None:
        if self.decision.done():  # a second click (or one after the time limit): already decided
            await interaction.response.send_message("This was already decided.", ephemeral=True)
            return
        self.decision.set_result(yes)
        self.stop()
        try:
            await interaction.response.edit_message(content=content, view=None, allowed_mentions=SAFE_MENTIONS)
        except discord.HTTPException as exc:
            log.info("confirmation message not updated: %s", exc)


class Confirmations:
    """Asks users to confirm actions. ``sleep`` times the limit (tests pass one they control)."""

    def __init__(self, timeout_s: float = CONFIRM_TIMEOUT_S, *, sleep: Sleep = asyncio.sleep) -> None:
        self.timeout_s = timeout_s
        self.sleep = sleep
        self._open: set[ConfirmView] = set()
        #: Set by :meth:`cancel_all`: open prompts then say the bot is restarting, not that time ran out.
        self.closing = False

    @property
    def pending(self) -> int:
        """Confirmations waiting for their button now."""
        return len(self._open)

    async def ask(self, where: Where, user_id: int, description: str, *, timeout_s: float | None = None) -> bool:
        """Post ``description`` with Confirm / Cancel in ``where`` and wait: True only if ``user_id`` confirms."""
        shown = description if len(description) <= _MAX_DESCRIPTION else description[: _MAX_DESCRIPTION - 1] + "…"
        view = ConfirmView(user_id, shown)
        content = f"<@{user_id}>, please confirm: {shown}"
        try:
            message = await _post(where, content, view)
        except discord.HTTPException as exc:
            log.info("could not ask for a confirmation: %s", exc)
            return False
        self._open.add(view)
        timer = asyncio.ensure_future(self.sleep(self.timeout_s if timeout_s is None else timeout_s))
        try:
            waiters: set[asyncio.Future[Any]] = {view.decision, timer}
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Whoever asked gave up (an agent stopped by its button or time limit): take the buttons away too,
            # so the prompt doesn't look open when nothing waits for it any more.
            view.decision.cancel()
            view.stop()
            try:
                await message.edit(content=f"❌ Not needed any more, nothing was done: {shown}", view=None)
            except discord.HTTPException as exc:
                log.info("abandoned confirmation not updated: %s", exc)
            raise
        finally:
            timer.cancel()
            self._open.discard(view)
        if view.decision.done() and not view.decision.cancelled():
            return view.decision.result()
        # Timed out (or cancelled by shutdown): say so where the buttons were, and never act.
        view.decision.cancel()
        view.stop()
        why = "❌ The bot is restarting, nothing was done" if self.closing else "⌛ Not confirmed in time, cancelled"
        try:
            await message.edit(content=f"{why}: {shown}", view=None)
        except discord.HTTPException as exc:
            log.info("expired confirmation not updated: %s", exc)
        return False

    def cancel_all(self) -> None:
        """Every open confirmation counts as cancelled (the bot is shutting down), and its prompt says so."""
        self.closing = True
        for view in list(self._open):
            if not view.decision.done():
                view.decision.cancel()

    def for_tools(self, where: Callable[[], Where | None], user_id: int) -> Confirm:
        """A :data:`~inference.tools.base.Confirm` asking ``user_id`` in ``where()`` (None: nowhere to ask: no)."""

        async def confirm(tool: Tool, args: dict[str, Any]) -> bool:
            place = where()
            if place is None:
                return False
            return await self.ask(place, user_id, tool.describe_call(args))

        return confirm


async def _post(where: Where, content: str, view: ConfirmView) -> discord.Message | discord.WebhookMessage:
    if isinstance(where, discord.Interaction):
        if not where.response.is_done():
            await where.response.send_message(content, view=view, allowed_mentions=SAFE_MENTIONS)
            return await where.original_response()
        return await where.followup.send(content, view=view, allowed_mentions=SAFE_MENTIONS, wait=True)
    return await where.send(content, view=view, allowed_mentions=SAFE_MENTIONS)
