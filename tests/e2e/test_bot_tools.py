"""Tool use on Discord through the real bot: a scripted OpenAI-compatible server (the large tier) asks for tools,
the bot runs them with the server's enabled tools and shows each call before the footer; /tools lets admins
choose which tools the model may call here."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio

from bot.answering import assistant_text
from bot.tools import MAX_SHOWN_CALLS, SERVER_INFO, GuildInfo, ToolService, tool_lines
from inference.tools import ToolBox, ToolCall, ToolResult, builtin_tools
from tests.e2e.bot_harness import FOOTER_RE, LARGE, Harness, is_final
from tests.e2e.test_bot_chat import replying_to, start_chat
from tests.fakes.backends import fake_catalogue
from tests.fakes.discord import FakeDiscord, InteractionSummary
from tests.fakes.tool_server import ScriptedServer, tool_call

MANAGE_SERVER, NOTHING = "32", "0"
REFUSAL = "You need the **Manage Server** permission to use this command."


@pytest_asyncio.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer() as s:
        yield s


def large_tier_at(switchboard: Harness, server: ScriptedServer) -> None:
    """The large tier (where tool_use routes) is a real OpenAI backend on the scripted server."""
    catalogue = fake_catalogue()
    spec = catalogue.models[LARGE]
    catalogue.models[LARGE] = spec.model_copy(update={"base_url": server.base_url})
    switchboard.catalogue = catalogue
    del switchboard.backends[LARGE]  # the harness's factory answers None: the Switchboard builds the real one


async def admin(
    fake: FakeDiscord, command: str, options: dict[str, Any] | None = None, *, permissions: str = MANAGE_SERVER
) -> InteractionSummary:
    it = await fake.send_interaction("tools", options or {}, subcommand=command, permissions=permissions)
    return await fake.wait_for_response(it)


def offered(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools", [])]


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(m["content"]) for m in body["messages"] if m["role"] == "tool"]


async def test_a_tool_call_runs_and_the_reply_shows_it_before_the_footer(
    switchboard: Harness, server: ScriptedServer
) -> None:
    server.calls(tool_call(0, "a", "calculator", {"expression": "37*91"}))
    server.text("37*91 is 3367.")
    large_tier_at(switchboard, server)
    async with switchboard.running():
        it = await switchboard.fake.send_interaction("ask", {"prompt": "calculate 37*91"})
        summary = await switchboard.wait_answered(it)
        await switchboard.fake.wait_for(lambda: switchboard.probe.count("record_request") == 1)
    text, calls, footer = summary.content.split("\n", 2)
    assert text == "37*91 is 3367."
    assert calls == "-# 🔧 calculator(expression='37\\*91') → 3367"  # markdown shown literally
    match = FOOTER_RE.search("\n" + footer)
    assert match is not None and (match["task"], match["tier"], match["model"]) == ("tool\\_use", "large", LARGE)
    first, second = server.bodies
    assert {"calculator", "server_info"} <= set(offered(first)) and first["tool_choice"] == "auto"
    assert tool_messages(second) == [{"tool": "calculator", "ok": True, "result": "3367"}]
    # A conversation's history holds the answer, not the tool lines nor the footer.
    assert assistant_text(summary.content) == "37*91 is 3367."


async def test_the_calculator_refusing_non_arithmetic_is_an_error_the_model_sees(
    switchboard: Harness, server: ScriptedServer
) -> None:
    server.calls(tool_call(0, "a", "calculator", {"expression": "__import__('os').system('ls')"}))
    server.text("I can only do arithmetic with that tool.")
    large_tier_at(switchboard, server)
    async with switchboard.running():
        it = await switchboard.fake.send_interaction("ask", {"prompt": "calculate the files in /"})
        summary = await switchboard.wait_answered(it)
    assert summary.content.startswith("I can only do arithmetic with that tool.\n-# 🔧 calculator(")
    assert "\n-# 🔧 calculator(expression=" in summary.content and " ⚠️ " in summary.content.split("\n")[1]
    (result,) = tool_messages(server.bodies[1])
    assert result["tool"] == "calculator" and result["ok"] is False and result["error"]
    assert FOOTER_RE.search(summary.content)  # answered, not crashed


async def test_a_disabled_tool_is_neither_offered_nor_run(switchboard: Harness, server: ScriptedServer) -> None:
    # The model asks for the disabled tool anyway: it gets an error result, and the tool never runs.
    server.calls(tool_call(0, "a", "calculator", {"expression": "2+2"}))
    server.text("The calculator is off here.")
    large_tier_at(switchboard, server)
    fake = switchboard.fake
    async with switchboard.running():
        done = await admin(fake, "disable", {"name": "calculator"})
        assert done.content == "`calculator` is disabled: the bot will neither offer nor call it here."
        it = await fake.send_interaction("ask", {"prompt": "calculate 2+2"})
        summary = await switchboard.wait_answered(it)
        listed = await admin(fake, "list")
    first, second = server.bodies
    assert "calculator" not in offered(first) and "server_info" in offered(first)
    (result,) = tool_messages(second)
    assert result["ok"] is False and "no tool named 'calculator'" in result["error"]
    assert "4" not in summary.content.split("\n")[1]  # never ran: no result shown
    assert "❌ disabled · `calculator`" in listed.content and "✅ enabled · `server_info`" in listed.content


async def test_enabling_again_offers_the_tool_and_every_tool_off_is_the_honest_notice(
    switchboard: Harness, server: ScriptedServer
) -> None:
    server.text("ok")
    large_tier_at(switchboard, server)
    fake = switchboard.fake
    async with switchboard.running():
        names = switchboard.bot.tools.names if switchboard.bot else []
        for name in names:
            await admin(fake, "disable", {"name": name})
        it = await fake.send_interaction("ask", {"prompt": "calculate 1+1"})
        notice = await switchboard.wait_answered(it)
        assert server.bodies == []  # no model ran
        assert "no tools are enabled" in notice.content and "no model was run" in notice.content
        again = await admin(fake, "enable", {"name": "calculator"})
        assert again.content == "`calculator` is enabled: the bot may call it here."
        it = await fake.send_interaction("ask", {"prompt": "calculate 1+1"})
        await switchboard.wait_answered(it)
    assert offered(server.bodies[0]) == ["calculator"]


async def test_server_info_reads_the_servers_public_information(switchboard: Harness, server: ScriptedServer) -> None:
    server.calls(tool_call(0, "a", "server_info", {}))
    server.text("This is Switchboard Test.")
    large_tier_at(switchboard, server)
    fake = switchboard.fake
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "show the server info"})
        summary = await switchboard.wait_answered(it)
    (result,) = tool_messages(server.bodies[1])
    info = json.loads(result["result"])
    assert info["name"] == "Switchboard Test" and info["member_count"] >= 1 and info["channel_count"] >= 1
    assert set(info) <= {"name", "member_count", "created", "channel_count", "description"}  # nothing private
    assert "\n-# 🔧 server_info() → " in summary.content


async def test_an_endpoint_that_refuses_tools_is_asked_under_the_grammar(
    switchboard: Harness, server: ScriptedServer
) -> None:
    server.error(400)
    server.text('{"tool": "calculator", "arguments": {"expression": "37*91"}}')
    server.text("It is 3367.")
    large_tier_at(switchboard, server)
    async with switchboard.running():
        it = await switchboard.fake.send_interaction("ask", {"prompt": "calculate 37*91"})
        summary = await switchboard.wait_answered(it)
    refused, chosen, answered = server.bodies
    assert "tools" in refused and "tools" not in chosen and "response_format" in chosen
    assert "3367" in answered["messages"][-1]["content"]  # the second generation reads the result
    assert summary.content.startswith("It is 3367.\n-# 🔧 calculator(expression='37\\*91') → 3367\n-# tool")
    assert "does not take tools" in summary.content.rsplit("\n", 1)[1]  # the footer says so


async def test_a_mention_uses_tools_too(switchboard: Harness, server: ScriptedServer) -> None:
    server.calls(tool_call(0, "a", "calculator", {"expression": "6*7"}))
    server.text("42.")
    large_tier_at(switchboard, server)
    fake = switchboard.fake
    async with switchboard.running():
        asked = await fake.send_message(f"{fake.mention(fake.bot_user)} calculate 6*7")
        reply = await fake.wait_for_message(
            None, lambda m: m.get("message_reference", {}).get("message_id") == asked["id"] and is_final(m["content"])
        )
    assert reply["content"].startswith("42.\n-# 🔧 calculator(expression='6\\*7') → 42\n-# tool\\_use · large")


async def test_a_chat_thread_uses_tools_with_its_history(switchboard: Harness, server: ScriptedServer) -> None:
    server.calls(tool_call(0, "a", "calculator", {"expression": "12*12"}))
    server.text("144.")
    large_tier_at(switchboard, server)
    fake = switchboard.fake
    switchboard.small.reply = "hi there"
    async with switchboard.running():
        thread = await start_chat(fake, "hello")
        await switchboard.wait_final_message(thread)
        await fake.wait_for(lambda: switchboard.probe.count("add_message") == 2, what="turn 1 stored")
        asked = await fake.send_message("now calculate 12*12", channel_id=thread)
        reply = await fake.wait_for_message(thread, replying_to(asked))
        await fake.wait_for(lambda: switchboard.probe.count("add_message") == 4, what="turn 2 stored")
        assert switchboard.store is not None
        stored = await switchboard.store.history(int(thread))
    assert reply["content"].startswith("144.\n-# 🔧 calculator(expression='12\\*12') → 144\n")
    turns = [(m["role"], m["content"]) for m in server.bodies[0]["messages"][1:]]
    assert turns == [("user", "hello"), ("assistant", "hi there"), ("user", "now calculate 12*12")]
    # The thread's memory holds the answer, not the tool lines nor the footer.
    assert [(m.role, m.content) for m in stored][-2:] == [("user", "now calculate 12*12"), ("assistant", "144.")]


async def test_tools_is_for_admins_only_with_names_completed_and_unknown_ones_refused(
    switchboard: Harness, server: ScriptedServer
) -> None:
    large_tier_at(switchboard, server)
    fake = switchboard.fake
    async with switchboard.running():
        store = switchboard.store
        assert store is not None
        for command, options in (("list", {}), ("disable", {"name": "calculator"}), ("enable", {"name": "dice"})):
            refused = await admin(fake, command, options, permissions=NOTHING)
            assert refused.content == REFUSAL and refused.ephemeral, command
        assert (await store.guild_config(int(fake.guild_id))).disabled_tools == []
        unknown = await admin(fake, "disable", {"name": "rm_rf"})
        assert unknown.content.startswith("Unknown tool `rm_rf`. Tools: `calculator`")
        assert (await store.guild_config(int(fake.guild_id))).disabled_tools == []
        moderator = fake.add_member("mod", roles=[fake.add_role("mods", int(MANAGE_SERVER))])
        member = fake.add_member("bob")
        choices = await complete(fake, "disable", "calc", moderator)
        nothing = await complete(fake, "disable", "calc", member)
    assert choices == ["calculator"] and nothing == []
    assert switchboard.model_calls() == 0 and server.bodies == []


async def complete(fake: FakeDiscord, sub: str, typed: str, user: dict[str, Any]) -> list[str]:
    it = await fake.send_autocomplete("tools", {"name": typed}, "name", subcommand=sub, user=user)
    answered = await fake.wait_for_request("POST", f"/interactions/{it.id}/")
    return [c["value"] for c in answered.json["data"]["choices"]]


def test_tool_lines_are_one_line_each_cut_to_fit_and_counted_past_the_limit() -> None:
    long = ToolResult(ToolCall("a", "fetch", {"q": "x"}), True, "line one\nline two " + "y" * 200)
    failed = ToolResult(ToolCall("b", "calculator", {"expression": "1/0"}), False, "division by zero")
    shown = tool_lines([long, failed, *([failed] * MAX_SHOWN_CALLS)]).split("\n")
    assert shown[0].startswith("-# 🔧 fetch(q='x') → line one line two yyy") and shown[0].endswith("…")
    assert len(shown[0]) < 120
    assert shown[1] == "-# 🔧 calculator(expression='1/0') ⚠️ division by zero"
    assert len(shown) == MAX_SHOWN_CALLS + 1 and shown[-1] == "-# 🔧 … and 2 more tool calls"


def test_server_info_is_offered_only_on_a_server_that_has_not_disabled_it() -> None:
    info = GuildInfo("S", 3, dt.datetime(2020, 1, 2, tzinfo=dt.UTC), 4)
    service = ToolService(ToolBox(builtin_tools()), lambda _guild: info)
    assert SERVER_INFO in service.names and SERVER_INFO in service.toolbox(1)
    assert SERVER_INFO not in service.toolbox(None)  # a direct message: no server to describe
    assert SERVER_INFO not in service.toolbox(1, [SERVER_INFO, "calculator"])
    assert "calculator" not in service.toolbox(1, ["calculator"]) and "roll_dice" in service.toolbox(1, ["calculator"])
