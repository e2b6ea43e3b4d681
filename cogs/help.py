"""/help: what the bot does, the commands this member may use, how to read an answer's footer, and this
server's routing policy as one table."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.answering import AnswerService, Scope
from bot.app import SwitchboardBot
from cogs._paging import send_paged
from cogs.admin.base import can_manage_server
from inference.types import TASK_LABELS, TASKS, Tier

ABOUT = (
    "**Switchboard** picks the smallest language model that can answer each request: easy requests go to a "
    "fast small model, hard ones to a larger one. Every answer ends with a line saying which route answered it."
)
FOOTER = (
    "**Reading an answer's footer**\n"
    "`chat · small · {model} · 1.2s` is task · tier · model · time to answer. A note after it says when the "
    "route changed: a local model standing in for an unreachable one, the other tier answering after a "
    "failure, old messages trimmed to fit."
)
#: Marks a model this server chose for a task (``/route set``) in the routing table, as ``/route show`` does.
SET_HERE = " (set here)"


def command_lines(tree: app_commands.CommandTree, *, admin: bool, in_guild: bool) -> list[str]:
    """One line per top-level command from the synced tree (so it never drifts from what Discord shows);
    groups Discord shows only to Manage Server holders are listed only for them."""
    lines = []
    for command in tree.get_commands(type=discord.AppCommandType.chat_input):
        perms = command.default_permissions
        if perms is not None and perms.value and not admin:
            continue
        if command.guild_only and not in_guild:
            continue
        # Names, required options and what they do; Discord shows the optional ones as the member types.
        if isinstance(command, app_commands.Group):
            subs = "|".join(sub.name for sub in command.commands)
            lines.append(f"`/{command.name} {subs}` · {_short(command.description)}")
        else:
            required = " ".join(p.name for p in command.parameters if p.required)
            lines.append(f"`/{command.name}{' ' + required if required else ''}` · {_short(command.description)}")
    menus = [c.name for c in tree.get_commands(type=discord.AppCommandType.message)]
    if menus and in_guild:
        lines.append(f"Right-click a message → **Apps**: {', '.join(menus)}")
    return lines


def _short(description: str, limit: int = 70) -> str:
    """The description up to its first sentence end, and at most ``limit`` characters, cut at a word."""
    text = description.split(". ")[0].rstrip(".")
    return text if len(text) <= limit else text[: text.rfind(" ", 0, limit)] + " …"


def routing_table(answers: AnswerService, scope: Scope) -> str:
    """Task (in plain words) → tier → model, with the server's choices applied, as a code block."""
    policy = answers.policy(scope)
    rows = [("task", "tier", "model")]
    for task in TASKS:
        tier = policy.tiers[task]
        model = answers.tier_model(policy, tier)
        own = policy.task_models.get(task)
        # As the router does: a task's own model serves it only on that model's tier.
        if own is not None and own in scope.catalogue.models and scope.catalogue.get(own).tier is tier:
            model = f"{own}{SET_HERE}"
        # A server admin names its models: a backtick must not end the code block for everyone's /help.
        rows.append((TASK_LABELS[task], tier.value, model.replace("`", "'")))
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    body = "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]}".rstrip() for r in rows)
    esc = policy.escalation
    large = answers.tier_model(policy, Tier.LARGE).replace("`", "'")
    return (
        f"```\n{body}\n```\nSmall-tier requests move to the large tier ({large}) when their "
        f"difficulty reaches {esc.threshold:.2f} or the prompt with its history passes {esc.long_context_tokens:,} "
        "tokens."
    )


def footer_ids() -> str:
    """The footer names tasks by short id: say which task each one is where the id is not its plain name."""
    unlike = [f"`{task}` is {label}" for task, label in TASK_LABELS.items() if not label.startswith(task)]
    return "In the footer, " + ", ".join(unlike) + "."


class HelpCog(commands.Cog):
    def __init__(self, bot: SwitchboardBot, *, answers: AnswerService) -> None:
        self.bot = bot
        self.answers = answers

    @app_commands.command(name="help")
    async def help_command(self, interaction: discord.Interaction) -> None:
        """What Switchboard does, its commands, and how this server routes requests."""
        # Private, and acknowledged before the database read of the server's routes.
        await interaction.response.defer(ephemeral=True, thinking=True)
        admin = can_manage_server(interaction)
        in_guild = interaction.guild_id is not None
        lines = command_lines(self.bot.tree, admin=admin, in_guild=in_guild)
        if in_guild and self.bot.user is not None:  # mentions are answered in servers only
            ask = next((i + 1 for i, line in enumerate(lines) if line.startswith("`/ask")), len(lines))
            lines.insert(ask, f"`@{self.bot.user.name} …` · the same as `/ask`, as a reply to your message")
        scope = await self.answers.scope(interaction.guild_id)
        policy = self.answers.policy(scope)
        where = "this server" if in_guild else "direct messages"
        sections = [
            ABOUT,
            "**Commands**"
            + (" (with the admin ones: you can manage this server)" if admin else "")
            + "\n"
            + "\n".join(lines),
            FOOTER.format(model=self.answers.tier_model(policy, Tier.SMALL)) + "\n" + footer_ids(),
            f"**Routing in {where}**\n{routing_table(self.answers, scope)}",
        ]
        await send_paged(interaction, "\n\n".join(sections))


async def setup(bot: SwitchboardBot) -> None:
    await bot.add_cog(HelpCog(bot, answers=bot.answers))
