"""Tool use on Discord: each server's toolbox, the Discord-side tools, and the answer that runs the tool loop.

- :class:`ToolService` builds the tools one request may use: the process's toolbox (built-ins and the operator's
  HTTP tools, :func:`inference.tools.default_toolbox`) plus the Discord-bound ones (``server_info``), minus the
  ones the server disabled (``/tools disable``). A disabled tool is neither offered to the model nor run.
- :class:`ToolAnswer` is an :class:`~inference.serving.service.Answer` whose text comes from
  :func:`inference.tools.loop.run_with_tools`, so the one delivery path (rate limit, footer, record, re-answer
  buttons) serves tool use as any other request; afterwards it tells which tools ran.
- :func:`tool_lines`: the short lines a reply shows for the calls (``-# 🔧 calculator(expression='37*91') → 3367``).
- :class:`RequestContext`: the delivery path names the request (server, channel, user) when the toolbox is built,
  so the tools bound to it (``remind``, ``poll``: bot/reminders.py) and the Confirm buttons (bot/confirm.py) for
  calls that act know where and whom to ask. A :class:`BoundToolBox` carries that confirmation to the tool loop.

No gateway objects here: the server's public information arrives as a plain :class:`GuildInfo`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot.reminders import POLL, REMIND, MakePoll, Remind
from inference.serving.service import Answer
from inference.tools.base import Confirm, Tool, ToolBox, ToolError, ToolResult
from inference.tools.loop import run_with_tools
from inference.types import ChatMessage, GenerationParams, RouteDecision

if TYPE_CHECKING:
    from inference.catalogue import Catalogue, RoutingOverrides
    from inference.serving.service import Switchboard
    from inference.tasks.base import Framing

#: The tool that reads the server's public information (registered per request, bound to that server).
SERVER_INFO = "server_info"
#: Most tool lines a reply shows; the rest are counted.
MAX_SHOWN_CALLS = 8
#: Most characters of one call's arguments or result in its line.
_MAX_PART = 80


@dataclass(frozen=True)
class GuildInfo:
    """A server's public information, as any member sees it: nothing about members or private channels."""

    name: str
    member_count: int | None
    created_at: dt.datetime
    channel_count: int
    description: str | None = None


class ServerInfo(Tool):
    """The server's name, member count, creation date and channel count."""

    name = SERVER_INFO
    description = (
        "This Discord server's public information: its name, member count, creation date and number of channels."
    )
    parameters = {"type": "object", "properties": {}, "additionalProperties": False}  # noqa: RUF012 - read only
    timeout_s = 5.0
    examples = (("How many members does this server have?", {}),)

    def __init__(self, info: Callable[[], GuildInfo | None]) -> None:
        self._info = info

    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        info = self._info()
        if info is None:
            raise ToolError("this server's information is not available right now")
        out: dict[str, Any] = {
            "name": info.name,
            "member_count": info.member_count,
            "created": info.created_at.date().isoformat(),
            "channel_count": info.channel_count,
        }
        if info.description:
            out["description"] = info.description
        return out


#: What the Discord-bound tools say, for ``/tools list`` without a server at hand.
DISCORD_TOOLS: dict[str, str] = {
    SERVER_INFO: ServerInfo.description,
    REMIND: Remind.description,
    POLL: MakePoll.description,
}


@dataclass(frozen=True)
class RequestContext:
    """Who asked, and where: what the tools bound to one request (and its Confirm buttons) need."""

    guild_id: int | None
    channel_id: int | None
    user_id: int
    #: Only the asker sees the answer: no tool may post where others read it.
    private: bool = False


class BoundToolBox(ToolBox):
    """A request's tools, with the Confirm prompt for its calls that act (None: such calls are refused)."""

    def __init__(self, tools: Iterable[Tool] = (), confirm: Confirm | None = None) -> None:
        super().__init__(tools)
        self.confirm = confirm


#: Builds the tools bound to one request (``remind``, ``poll``) or its confirmation prompt.
RequestTools = Callable[[RequestContext], Iterable[Tool]]
RequestConfirm = Callable[[RequestContext], Confirm | None]


class ToolService:
    """The tools each server may use: the shared toolbox, the Discord-bound tools, minus the disabled ones."""

    def __init__(
        self,
        base: ToolBox,
        guild_info: Callable[[int], GuildInfo | None] | None = None,
        *,
        request_tools: RequestTools | None = None,
        confirm: RequestConfirm | None = None,
    ) -> None:
        self.base = base
        #: Reads a server's public information (the bot's cached guild); None: ``server_info`` is not offered.
        self.guild_info = guild_info
        #: The tools bound to one request (:class:`RequestContext`): reminders, polls.
        self.request_tools = request_tools
        #: The current request's Confirm prompt for calls that act.
        self.confirm = confirm

    @property
    def names(self) -> list[str]:
        """Every tool a server may enable, in the order ``/tools list`` shows them."""
        offered = [SERVER_INFO] if self.guild_info is not None else []
        offered += [REMIND, POLL] if self.request_tools is not None else []
        return [*self.base.names, *(name for name in offered if name not in self.base)]

    def describe(self, name: str) -> str:
        tool = self.base.get(name)
        return tool.description if tool is not None else DISCORD_TOOLS.get(name, "")

    def toolbox(
        self, guild_id: int | None, disabled: Iterable[str] = (), request: RequestContext | None = None
    ) -> ToolBox:
        """The tools a request on ``guild_id`` (None: a direct message) may use; with ``request`` (who asked where),
        also the tools bound to it and the Confirm prompt for calls that act."""
        off = set(disabled)
        box = self.base.enabled(n for n in self.base.names if n not in off)
        if guild_id is not None and self.guild_info is not None and SERVER_INFO not in off and SERVER_INFO not in box:
            lookup = self.guild_info
            box.register(ServerInfo(lambda: lookup(guild_id)))
        if request is None or request.guild_id != guild_id:  # no request to bind them to: no bound tools
            return box
        bound = BoundToolBox(box, self.confirm(request) if self.confirm is not None else None)
        if self.request_tools is not None and not request.private:
            for tool in self.request_tools(request):
                if tool.name not in off and tool.name not in bound:
                    bound.register(tool)
        return bound


class ToolAnswer(Answer):
    """An answer written by the tool loop: iterate it for the final text; ``results`` lists the calls made.

    After the loop it reports the model that answered last (tier, model, timings) and the loop's notes, as any
    answer does, so the footer and the request log read it unchanged.
    """

    def __init__(
        self,
        board: Switchboard,
        decision: RouteDecision,
        prompt: str,
        toolbox: ToolBox,
        *,
        catalogue: Catalogue,
        overrides: RoutingOverrides | None = None,
        history: Sequence[ChatMessage] = (),
        framing: Framing | None = None,
        persona: str | None = None,
        max_new_tokens: int = 512,
        time_limit_s: float = 300.0,
    ) -> None:
        super().__init__(board, decision, [], GenerationParams(max_new_tokens=max_new_tokens), None, catalogue)
        self.results: list[ToolResult] = []
        self._prompt, self._toolbox = prompt, toolbox
        self._overrides, self._history = overrides, list(history)
        self._framing, self._persona = framing, persona
        self._max_new_tokens, self._time_limit_s = max_new_tokens, time_limit_s

    @property
    def toolbox(self) -> ToolBox:
        return self._toolbox

    @property
    def had_effects(self) -> bool:
        """Whether a call that changed something beyond the reply ran (a reminder stored, a poll created)."""
        for result in self.results:
            tool = self._toolbox.get(result.call.name)
            if result.ok and tool is not None and (tool.acts or tool.side_effects):
                return True
        return False

    async def _run(self) -> AsyncIterator[str]:
        run = await run_with_tools(
            self._board,
            self.decision,
            self._prompt,
            self._toolbox,
            history=self._history,
            framing=self._framing,
            persona=self._persona,
            max_new_tokens=self._max_new_tokens,
            time_limit_s=self._time_limit_s,
            on_result=self.results.append,
            overrides=self._overrides,
            catalogue=self._catalogue,
            # Calls that act (a poll, reminding someone else) run only if the asker presses Confirm.
            confirm=self._toolbox.confirm if isinstance(self._toolbox, BoundToolBox) else None,
        )
        last = run.answer
        if last is not None:
            self.tier, self.model, self.provider = last.tier, last.model, last.provider
            self.timings, self.truncated = last.timings, last.truncated
        self.notes = list(dict.fromkeys(run.notes))  # the loop's notes already carry the last answer's
        yield run.text


def tool_lines(results: Sequence[ToolResult]) -> str:
    """One subtext line per call: ``-# 🔧 calculator(expression='37*91') → 3367`` (``⚠️ why`` for a failure)."""
    lines = []
    for result in results[:MAX_SHOWN_CALLS]:
        args = ", ".join(f"{k}={v!r}" for k, v in result.call.arguments.items())
        outcome = f"→ {_short(result.output)}" if result.ok else f"⚠️ {_short(result.output)}"
        lines.append(f"-# 🔧 {result.call.name}({_short(args)}) {outcome}")
    if len(results) > MAX_SHOWN_CALLS:
        lines.append(f"-# 🔧 … and {len(results) - MAX_SHOWN_CALLS} more tool calls")
    return "\n".join(lines)


def _short(text: str) -> str:
    """One line (a newline would end the subtext), cut to fit, markdown shown literally."""
    flat = " ".join(text.split())
    if len(flat) > _MAX_PART:
        flat = flat[: _MAX_PART - 1] + "…"
    return discord.utils.escape_markdown(flat)


def guild_info(guild: discord.Guild) -> GuildInfo:
    """What ``server_info`` may tell about ``guild``: what every member of it can see anyway."""
    return GuildInfo(
        name=guild.name,
        member_count=guild.member_count,
        created_at=guild.created_at,
        channel_count=sum(1 for c in guild.channels if not isinstance(c, discord.CategoryChannel)),
        description=guild.description,
    )
