"""Gateway session handling: the websocket handler (HELLO, IDENTIFY/READY + GUILD_CREATEs, RESUME with
replay, heartbeats, REQUEST_GUILD_MEMBERS), event dispatch filtered by intents and by shard (several
sessions may IDENTIFY with `shard: [id, count]`; each gets its own guilds' events), op 7 RECONNECT and
op 9 INVALID_SESSION on request, and GET /gateway(/bot) (`shard_count`). Frame encoding and
per-connection state (`GatewaySession`) are in gateway.py."""

from __future__ import annotations

import json
import traceback
from typing import Any

from aiohttp import WSMsgType, web

from . import payloads as P
from .core import Call, Core
from .gateway import (
    DISPATCH,
    GUILD_MEMBERS,
    HEARTBEAT,
    HEARTBEAT_ACK,
    HELLO,
    IDENTIFY,
    INVALID_SESSION,
    MESSAGE_CONTENT,
    RECONNECT,
    REQUEST_GUILD_MEMBERS,
    RESUME,
    GatewaySession,
    intent_for,
)


class SessionsMixin(Core):
    """The gateway side of the fake."""

    # ------------------------------------------------------------------ test-facing

    async def request_reconnect(self, *, wait: bool = True, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Send op 7 RECONNECT (as Discord does before moving a session) and, with `wait`, wait until the
        client has reconnected and RESUMEd. Events dispatched meanwhile are replayed to it on RESUME."""
        resumed = self.resume_count
        sessions = self._live_sessions()
        for session in sessions:
            session.send(RECONNECT, None)
        await self.flush()
        if wait:  # every session (shard) comes back
            await self._wait(lambda: self.resume_count >= resumed + len(sessions), timeout, "RESUME after op 7")

    async def invalidate_session(self, resumable: bool, *, wait: bool = True, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Send op 9 INVALID_SESSION and, with `wait`, wait for the client to come back: RESUME when
        `resumable`, else a fresh IDENTIFY (new session, READY and GUILD_CREATEs again; events in between
        are lost)."""
        resumed, identified = self.resume_count, self.identify_count
        sessions = self._live_sessions()
        for session in sessions:
            session.resumable = resumable
            session.send(INVALID_SESSION, resumable)
        await self.flush()
        if not wait:
            return
        if resumable:
            await self._wait(lambda: self.resume_count >= resumed + len(sessions), timeout, "RESUME after op 9")
        else:
            await self._wait(lambda: self.identify_count >= identified + len(sessions), timeout, "IDENTIFY after op 9")

    def _live_sessions(self) -> list[GatewaySession]:
        sessions = [s for s in self._sessions if s.identified]
        if not sessions:
            raise RuntimeError("no client is connected to the gateway")
        return sessions

    # ------------------------------------------------------------------ dispatching events

    @property
    def _connected(self) -> bool:
        return any(s.identified for s in self._sessions)

    def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.dispatched.append((event, data))
        guild_id = _event_guild(event, data)
        for session in [*self._sessions, *self._detached.values()]:  # detached ones log it for RESUME
            if not session.identified or not session.owns(guild_id):
                continue
            need = intent_for(event, data)
            if need and not session.intents & need:
                continue
            out = data
            if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and not session.intents & MESSAGE_CONTENT:
                out = self._without_content(data)
            session.send(DISPATCH, out, event)
        self._notify()

    def _without_content(self, msg: dict[str, Any]) -> dict[str, Any]:
        """What Discord sends a bot without the MESSAGE_CONTENT intent."""
        me = self.bot_user["id"]
        if msg["author"]["id"] == me or not msg.get("guild_id") or any(u["id"] == me for u in msg["mentions"]):
            return msg
        return {**msg, "content": "", "embeds": [], "attachments": [], "components": []}

    # ------------------------------------------------------------------ the websocket handler

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        zlib_stream = self.zlib_stream and request.query.get("compress") == "zlib-stream"
        session = GatewaySession(ws, zlib_stream=zlib_stream)
        self.connections.append({"query": dict(request.query), "zlib": zlib_stream})
        self._sessions.append(session)
        session.send(HELLO, {"heartbeat_interval": 41250, "_trace": ["fake-discord"]})
        try:
            async for frame in ws:
                if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                payload = json.loads(frame.data)
                self.received.append(payload)
                await self._gateway_op(session, payload)
                self._notify()
        except Exception:
            self.errors.append("gateway handler: " + traceback.format_exc())
        finally:
            self._sessions.remove(session)
            # Discord keeps a session resumable unless the client closed it with 1000/1001.
            if session.identified and session.resumable and ws.close_code not in (1000, 1001):
                session.detached = True
                self._detached[session.session_id] = session
            await session.close()
            self._notify()
        return ws

    async def _gateway_op(self, session: GatewaySession, payload: dict[str, Any]) -> None:
        op = payload.get("op")
        data: Any = payload.get("d")
        if op == HEARTBEAT:
            session.client_seq = max(session.client_seq, int(data or 0))
            session.send(HEARTBEAT_ACK, None)
        elif op == IDENTIFY:
            if data.get("token") != self.token:
                await session.ws.close(code=4004, message=b"Authentication failed.")
                return
            if "shard" in data:
                shard_id, num_shards = (int(n) for n in data["shard"])
                if not 0 <= shard_id < num_shards:
                    await session.ws.close(code=4010, message=b"Invalid shard.")
                    return
                session.shard = (shard_id, num_shards)
            self.identify_count += 1
            session.identified = True
            session.intents = int(data.get("intents", 0))
            guilds = [g for g in self.guilds.values() if session.owns(g.id)]
            ready: dict[str, Any] = {
                "v": 10,
                "user": P.private_user(self.bot_user),
                "guilds": [{"id": g.id, "unavailable": True} for g in guilds],
                "session_id": session.session_id,
                "resume_gateway_url": self.gateway_url,
                "application": {"id": self.application_id, "flags": 0},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "user_settings": {},
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": ["fake"],
                "_trace": ["fake-discord"],
            }
            if "shard" in data:
                ready["shard"] = data["shard"]
            session.send(DISPATCH, ready, "READY")
            for guild in guilds:
                session.send(DISPATCH, self._guild_create(guild), "GUILD_CREATE")
            self.dispatched.append(("READY", ready))
        elif op == RESUME:
            old = self._detached.pop(str(data.get("session_id")), None)
            if data.get("token") != self.token:
                await session.ws.close(code=4004, message=b"Authentication failed.")
                return
            if old is None:  # unknown or invalidated session: the client must IDENTIFY afresh
                session.send(INVALID_SESSION, False)
                return
            self.replayed.append(session.resume(old, int(data.get("seq") or 0)))
            self.resume_count += 1
            resumed = {"_trace": ["fake-discord"]}
            session.send(DISPATCH, resumed, "RESUMED")
            self.dispatched.append(("RESUMED", resumed))
        elif op == REQUEST_GUILD_MEMBERS:
            guild = self.guilds[str(data["guild_id"])]
            chunk: dict[str, Any] = {
                "guild_id": guild.id,
                "members": list(guild.members.values()) if session.intents & GUILD_MEMBERS else [],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
            }
            if data.get("presences"):
                chunk["presences"] = []
            if "nonce" in data:
                chunk["nonce"] = data["nonce"]
            session.send(DISPATCH, chunk, "GUILD_MEMBERS_CHUNK")
        # PRESENCE_UPDATE (3), VOICE_STATE_UPDATE (4) and others: recorded in `received`, no answer.

    # ------------------------------------------------------------------ REST: gateway discovery

    async def _get_gateway(self, c: Call) -> tuple[int, Any]:
        return 200, {"url": self.gateway_url}

    async def _get_gateway_bot(self, c: Call) -> tuple[int, Any]:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}
        return 200, {"url": self.gateway_url, "shards": self.shard_count, "session_start_limit": limit}


def _event_guild(event: str, data: dict[str, Any]) -> str | None:
    """The guild an event belongs to, which decides the shard it goes to (None: outside any guild)."""
    if event in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"):
        return str(data["id"])
    guild_id = data.get("guild_id")
    return str(guild_id) if guild_id else None
