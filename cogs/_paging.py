"""Answers longer than one Discord message: split at line boundaries, never mid-line.

The first page is the interaction's response (or replaces the deferred "thinking" one) and the rest follow
as followups with the same visibility. Several messages rather than Previous/Next buttons: nothing to expire,
nothing to route back, and every page stays readable (and searchable) after the bot restarts.
"""

from __future__ import annotations

import discord

from bot.replies import SAFE_MENTIONS, split_message

#: What an empty answer shows (Discord refuses a message without content).
EMPTY = "Nothing to show."


def pages(content: str) -> list[str]:
    """The messages ``content`` is sent as: each within Discord's limit, cut at paragraph or line ends
    (a single line over the limit is the only thing cut inside a line; code fences are closed and reopened)."""
    # The blank lines a cut falls on would only pad the end or start of a message.
    return [page.strip("\n") for page in split_message(content)] or [EMPTY]


async def send_paged(interaction: discord.Interaction, content: str, *, ephemeral: bool = True) -> None:
    """Answer ``interaction`` with ``content`` over as many messages as it needs."""
    first, *rest = pages(content)
    if interaction.response.is_done():  # deferred: the first page replaces "thinking..."
        await interaction.edit_original_response(content=first, allowed_mentions=SAFE_MENTIONS)
    else:
        await interaction.response.send_message(first, ephemeral=ephemeral, allowed_mentions=SAFE_MENTIONS)
    for page in rest:
        await interaction.followup.send(page, ephemeral=ephemeral, allowed_mentions=SAFE_MENTIONS)
