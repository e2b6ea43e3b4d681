"""What several cogs' options share: the task choices and the converter from a Discord attachment."""

from __future__ import annotations

import discord
from discord import app_commands

from inference.types import TASK_LABELS, TASKS, Attachment, Tier

#: A command option naming a task, labelled in plain words (``/ask task``, ``/route set task``).
TASK_CHOICES = [app_commands.Choice(name=TASK_LABELS[t], value=t) for t in TASKS]
#: A command option naming a tier (``/models add tier``).
TIER_CHOICES = [app_commands.Choice(name=t.value, value=t.value) for t in Tier]


def to_attachment(a: discord.Attachment) -> Attachment:
    """What the router, the input checks and the reader need of a Discord attachment (``read`` downloads it from
    Discord's CDN, called only once its type and size passed: inference.attachments)."""
    return Attachment(filename=a.filename, content_type=a.content_type or "", size=a.size, read=a.read)
