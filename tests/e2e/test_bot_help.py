"""/help through the real bot: private, the commands this member may use, the footer explained, and this
server's routing policy as one table (server choices applied)."""

from __future__ import annotations

import re
from typing import Any

from inference.catalogue import OpenAIModel
from inference.types import Tier
from tests.e2e.bot_harness import PUBLIC_HOST, Harness
from tests.fakes.discord import FakeDiscord, InteractionSummary

MANAGE_SERVER = "32"
#: The routing table's closing note: once it is there, every page of the answer is.
LAST_NOTE = "move to the large tier"
# Names and required options (Discord shows the optional ones as a member types).
MEMBER_COMMANDS = ("`/ask prompt`", "`/chat start|end`", "`/classify labels`", "`/stats`", "`/help`")
ADMIN_COMMANDS = (
    "`/models ",
    "`/route show|set|reset|corrections`",
    "`/settings show|",
    "`/tools list|enable|disable`",
)


async def ask_help(fake: FakeDiscord, **kw: Any) -> InteractionSummary:
    it = await fake.send_interaction("help", **kw)
    return await fake.wait_for_response(it, lambda s: bool(s.messages) and LAST_NOTE in s.messages[-1]["content"])


def shown_privately(summary: InteractionSummary) -> str:
    """Every message private and within Discord's limit; the text of them all."""
    assert summary.steps[0].body == {"type": 5, "data": {"flags": 64}}  # deferred privately before the database
    for message in summary.messages:
        assert message["flags"] & 64 and len(message["content"]) <= 2000
    return "\n".join(m["content"] for m in summary.messages)


def routing_table(text: str) -> dict[str, tuple[str, str]]:
    """task label -> (tier, model), from the code block."""
    block = re.search(r"```\n(.*?)\n```", text, re.S)
    assert block is not None, text
    header, *rows = block.group(1).splitlines()
    assert re.split(r"\s{2,}", header) == ["task", "tier", "model"]
    table = {}
    for row in rows:
        label, tier, model = re.split(r"\s{2,}", row)
        table[label] = (tier, model)
    return table


async def test_help_for_a_member_lists_their_commands_the_footer_and_the_routes(switchboard: Harness) -> None:
    async with switchboard.running():
        summary = await ask_help(switchboard.fake)
    text = shown_privately(summary)
    assert len(summary.messages) <= 2  # split at a section, never inside a line
    assert "Right-click a message → **Apps**: Translate" in text
    assert text.startswith("**Switchboard** picks the smallest language model")
    for command in MEMBER_COMMANDS:
        assert f"\n{command} · " in text, command
    assert "\n`@switchboard …` · the same as `/ask`" in text
    for command in ADMIN_COMMANDS:
        assert command not in text, command
    # The footer's fields, and its task ids where they are not the plain words.
    assert "`chat · small · small-fake · 1.2s` is task · tier · model · time to answer." in text
    assert "`grammar` is structured output (JSON, fixed format)" in text
    assert "`rag` is questions about documents (RAG)" in text
    assert routing_table(text) == {
        "classification (label, sort)": ("small", "small-fake"),
        "conversion (translate, reformat)": ("small", "small-fake"),
        "completion (continue a text)": ("small", "small-fake"),
        "chat": ("small", "small-fake"),
        "questions about documents (RAG)": ("large", "large-fake"),
        "code": ("large", "large-fake"),
        "structured output (JSON, fixed format)": ("small", "small-fake"),
        "tool use": ("large", "large-fake"),
        "agent (multi-step)": ("large", "large-fake"),
        "images and media": ("large", "large-fake"),
    }
    assert "(large-fake) when their difficulty reaches 0.50" in text
    assert "set here" not in text  # nothing chosen for this server
    assert switchboard.model_calls() == 0


async def test_help_for_an_admin_adds_admin_commands_and_shows_the_servers_routes(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        store = switchboard.store
        assert store is not None
        guild, alice = int(fake.guild_id), int(fake.user["id"])
        await store.set_task_model(guild, alice, "code", "local-fake")  # a large-tier task on a large model
        # A server admin's own model whose name would end the table's code block.
        spec = OpenAIModel(base_url=f"https://{PUBLIC_HOST}/v1", model="m", tier=Tier.LARGE)
        await store.add_model(guild, alice, "x```y", spec)
        await store.set_task_model(guild, alice, "agent", "x```y")
        await store.set_task_model(guild, alice, "chat", "local-fake")  # only when chat escalates: not its row
        await store.update_guild_config(guild, alice, "settings.threshold", threshold=0.7)
        summary = await ask_help(fake, permissions=MANAGE_SERVER)
        member = await ask_help(fake)
    text = shown_privately(summary)
    for command in (*MEMBER_COMMANDS, *ADMIN_COMMANDS):
        assert f"\n{command}" in text, command
    assert re.search(r"\n`/models list\|add\|[a-z|]+` · See and manage this server's models", text)
    assert len(summary.messages) == 2  # more than one message holds: split at a line, never inside one
    first, second = (m["content"] for m in summary.messages)
    # Split between two sections: the second message opens a section, and the routing table is whole in it.
    assert second.startswith("**") and not first.endswith("\n")
    assert "**Routing in this server**\n```\n" in second and "**Routing in this server**" not in first
    for content in (text, shown_privately(member)):  # the server's routes are the same for everyone
        table = routing_table(content)
        assert table["code"] == ("large", "local-fake (set here)") and table["chat"] == ("small", "small-fake")
        assert table["agent (multi-step)"] == ("large", "x'''y (set here)")
        assert "when their difficulty reaches 0.70" in content


async def test_help_in_a_direct_message_shows_the_default_routes(switchboard: Harness) -> None:
    fake = switchboard.fake
    dm = "4242"
    fake.channels[dm] = {"id": dm, "type": 1, "flags": 0, "last_message_id": None, "recipients": [fake.user]}
    async with switchboard.running():
        summary = await ask_help(fake, channel_id=dm)
    text = shown_privately(summary)
    assert "**Routing in direct messages**" in text and routing_table(text)["chat"] == ("small", "small-fake")
    assert "`/stats`" not in text and "@switchboard" not in text  # server-only
    assert "`/ask prompt" in text and "`/help`" in text
