"""One gateway connection: ordered outbound queue, sequence numbers, optional zlib-stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import zlib
from typing import Any

from aiohttp import web

# Gateway opcodes.
DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE_UPDATE, VOICE_STATE_UPDATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_GUILD_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11

# Intents (https://discord.com/developers/docs/events/gateway#gateway-intents).
GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
GUILD_MESSAGES = 1 << 9
GUILD_MESSAGE_REACTIONS = 1 << 10
GUILD_MESSAGE_TYPING = 1 << 11
DIRECT_MESSAGES = 1 << 12
DIRECT_MESSAGE_REACTIONS = 1 << 13
DIRECT_MESSAGE_TYPING = 1 << 14
MESSAGE_CONTENT = 1 << 15

_GUILD_EVENTS = (
    "GUILD_UPDATE",
    "GUILD_ROLE_CREATE",
    "GUILD_ROLE_UPDATE",
    "GUILD_ROLE_DELETE",
    "CHANNEL_CREATE",
    "CHANNEL_UPDATE",
    "CHANNEL_DELETE",
    "CHANNEL_PINS_UPDATE",
    "THREAD_CREATE",
    "THREAD_UPDATE",
    "THREAD_DELETE",
    "THREAD_LIST_SYNC",
    "THREAD_MEMBER_UPDATE",
)
_MEMBER_EVENTS = ("GUILD_MEMBER_ADD", "GUILD_MEMBER_UPDATE", "GUILD_MEMBER_REMOVE", "THREAD_MEMBERS_UPDATE")


def intent_for(event: str, data: dict[str, Any]) -> int:
    """The intent an event needs (0: always sent)."""
    in_guild = bool(data.get("guild_id"))
    if event in _GUILD_EVENTS:
        return GUILDS
    if event in _MEMBER_EVENTS:
        return GUILD_MEMBERS
    if event.startswith("MESSAGE_REACTION"):
        return GUILD_MESSAGE_REACTIONS if in_guild else DIRECT_MESSAGE_REACTIONS
    if event.startswith("MESSAGE_"):
        return GUILD_MESSAGES if in_guild else DIRECT_MESSAGES
    if event == "TYPING_START":
        return GUILD_MESSAGE_TYPING if in_guild else DIRECT_MESSAGE_TYPING
    return 0


class GatewaySession:
    """A connected client. Frames go through one queue so their order is the order of `send` calls.

    Dispatches are also kept in `log` (by sequence) so a client that reconnects can RESUME: a session whose
    connection dropped is `detached` and keeps logging the events it misses, as Discord buffers them."""

    def __init__(self, ws: web.WebSocketResponse, *, zlib_stream: bool) -> None:
        self.ws = ws
        self.session_id = secrets.token_hex(16)
        self.identified = False
        self.intents = 0
        self.seq = 0
        self.client_seq = 0  # highest sequence the client reported (its heartbeats carry it)
        self.log: list[tuple[int, str]] = []  # (sequence, frame) of every dispatch, for RESUME
        self.detached = False  # connection gone, session resumable: dispatches are only logged
        self.resumable = True  # False once invalidated (op 9 false) or closed with 1000/1001
        self.shard: tuple[int, int] = (0, 1)  # [shard_id, num_shards] from IDENTIFY; (0, 1): every guild
        self._zlib = zlib.compressobj() if zlib_stream else None
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop(), name="fake-discord-gateway-writer")

    def owns(self, guild_id: str | None) -> bool:
        """Whether this session's shard receives that guild's events: ``(guild_id >> 22) % num_shards``, as
        Discord routes them; events outside any guild (DMs) go to shard 0 only."""
        shard_id, num_shards = self.shard
        if guild_id is None:
            return shard_id == 0
        return (int(guild_id) >> 22) % num_shards == shard_id

    def send(self, op: int, data: Any, event: str | None = None) -> None:
        """Queue a frame (DISPATCH frames get the next sequence number)."""
        seq = None
        if op == DISPATCH:
            self.seq += 1
            seq = self.seq
        # Serialised now: later changes to the fake's state do not leak into queued events.
        text = json.dumps({"op": op, "d": data, "s": seq, "t": event})
        if seq is not None:
            self.log.append((seq, text))
        if not self.detached:
            self._queue.put_nowait(text)

    def resume(self, old: GatewaySession, seq: int) -> int:
        """Take over `old` (RESUME): its id, intents and sequence; queue the dispatches after `seq` that
        the client missed. Returns how many were replayed."""
        self.session_id, self.intents, self.seq, self.log = old.session_id, old.intents, old.seq, old.log
        self.shard = old.shard
        self.identified = True
        self.client_seq = seq
        missed = [text for s, text in self.log if s > seq]
        for text in missed:
            self._queue.put_nowait(text)
        return len(missed)

    async def flush(self) -> None:
        """Wait until every queued frame has been written to the socket."""
        if not self._writer.done():
            await self._queue.join()

    async def _write_loop(self) -> None:
        while True:
            text = await self._queue.get()
            try:
                if text is None:
                    return
                if self.ws.closed:
                    continue
                if self._zlib is not None:
                    raw = self._zlib.compress(text.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH)
                    await self.ws.send_bytes(raw)
                else:
                    await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                pass  # client went away; remaining frames are dropped
            finally:
                self._queue.task_done()

    async def close(self, code: int = 1000, message: str = "") -> None:
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._writer), 2)
        if not self._writer.done():
            self._writer.cancel()
        if not self.ws.closed:
            await self.ws.close(code=code, message=message.encode())
