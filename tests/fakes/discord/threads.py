"""Threads: created by a human (`create_thread`) or the bot (from a message or not), archived by a
moderator (`archive_thread`) or by inactivity (`auto_archive`), unarchived by messages, thread members."""

from __future__ import annotations

import copy
from typing import Any

from . import payloads as P
from .core import Call, Core
from .records import ApiError


class ThreadsMixin(Core):
    """Threads and thread members."""

    # ------------------------------------------------------------------ test-facing

    @property
    def threads(self) -> list[dict[str, Any]]:
        return [c for c in self.channels.values() if c["type"] in P.THREAD_TYPES]

    async def create_thread(
        self,
        name: str,
        *,
        channel_id: str | None = None,
        owner: dict[str, Any] | None = None,
        private: bool = False,
        auto_archive_duration: int = 1440,
    ) -> dict[str, Any]:
        """A thread created by a human (dispatches THREAD_CREATE); it archives after `auto_archive_duration`
        minutes of inactivity (see `auto_archive`)."""
        parent = self.channels[channel_id or self.channel_id]
        owner = owner or self.user
        type_ = P.PRIVATE_THREAD if private else P.PUBLIC_THREAD
        thread = self._new_thread(self._ids.next(), parent, name, owner["id"], type_, auto_archive_duration)
        await self.flush()
        return thread

    async def archive_thread(self, thread_id: str, *, locked: bool = False) -> dict[str, Any]:
        """Archive a thread as a moderator would (dispatches THREAD_UPDATE)."""
        thread = self.channels[thread_id]
        meta = thread["thread_metadata"]
        meta.update(archived=True, archive_timestamp=P.iso(), locked=locked or meta["locked"])
        self._dispatch("THREAD_UPDATE", copy.deepcopy(thread))
        await self.flush()
        return thread

    async def auto_archive(self, thread_id: str) -> dict[str, Any]:
        """Archive a thread as Discord does once its `auto_archive_duration` of inactivity has passed
        (archived, not locked; dispatches THREAD_UPDATE). A later message unarchives it."""
        thread = self.channels[thread_id]
        meta = thread["thread_metadata"]
        if meta["archived"]:
            raise ValueError(f"thread {thread_id} is already archived")
        meta.update(archived=True, archive_timestamp=P.iso())
        self._dispatch("THREAD_UPDATE", copy.deepcopy(thread))
        await self.flush()
        return thread

    # ------------------------------------------------------------------ REST: threads

    async def _thread_from_message(self, c: Call) -> tuple[int, Any]:
        parent = self._channel(c.params["channel_id"])
        starter = self._message(parent["id"], c.params["message_id"])
        if "thread" in starter:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        body = c.json or {}
        duration = body.get("auto_archive_duration") or parent.get("default_auto_archive_duration", 1440)
        # The thread id is the starter message's id.
        thread = self._new_thread(starter["id"], parent, body["name"], self.bot_user["id"], P.PUBLIC_THREAD, duration)
        starter["thread"] = copy.deepcopy(thread)
        starter["flags"] |= P.FLAG_HAS_THREAD
        await self.flush()
        return 201, thread

    async def _thread_without_message(self, c: Call) -> tuple[int, Any]:
        parent = self._channel(c.params["channel_id"])
        body = c.json or {}
        type_ = body.get("type") or P.PRIVATE_THREAD
        self._require(parent["id"], P.CREATE_PUBLIC_THREADS if type_ == P.PUBLIC_THREAD else P.CREATE_PRIVATE_THREADS)
        duration = body.get("auto_archive_duration") or parent.get("default_auto_archive_duration", 1440)
        thread = self._new_thread(
            self._ids.next(), parent, body["name"], self.bot_user["id"], type_, duration, body.get("invitable", True)
        )
        if type_ == P.PUBLIC_THREAD:  # Discord posts a THREAD_CREATED system message in the parent
            notice = P.message(self._ids.next(), parent["id"], self.bot_user, thread["name"], type_=18)
            notice["message_reference"] = {"type": 0, "channel_id": thread["id"], "guild_id": parent["guild_id"]}
            self._store_message(notice)
        await self.flush()
        return 201, thread

    def _new_thread(
        self,
        thread_id: str,
        parent: dict[str, Any],
        name: str,
        owner_id: str,
        type_: int,
        duration: int,
        invitable: bool = True,
    ) -> dict[str, Any]:
        guild = self.guilds[parent["guild_id"]]
        thread = P.thread(
            thread_id,
            guild.id,
            parent["id"],
            name,
            owner_id,
            type_=type_,
            auto_archive_duration=duration,
            invitable=invitable,
        )
        self.channels[thread_id] = thread
        self.thread_members[thread_id] = [owner_id]
        guild.thread_ids.append(thread_id)
        event = {**copy.deepcopy(thread), "newly_created": True}
        if owner_id == self.bot_user["id"]:  # `member` only when the bot is in the thread
            event["member"] = P.thread_member(thread_id, owner_id)
        self._dispatch("THREAD_CREATE", event)
        return thread

    def _unarchive(self, thread: dict[str, Any]) -> None:
        thread["thread_metadata"].update(archived=False, archive_timestamp=P.iso())
        self._dispatch("THREAD_UPDATE", copy.deepcopy(thread))

    async def _add_thread_member(self, c: Call) -> tuple[int, Any]:
        thread = self._channel(c.params["channel_id"])
        user_id = self.bot_user["id"] if c.params["user_id"] == "@me" else c.params["user_id"]
        members = self.thread_members.setdefault(thread["id"], [])
        if user_id not in members:
            members.append(user_id)
            thread["member_count"] = len(members)
        return 204, None

    async def _remove_thread_member(self, c: Call) -> tuple[int, Any]:
        thread = self._channel(c.params["channel_id"])
        user_id = self.bot_user["id"] if c.params["user_id"] == "@me" else c.params["user_id"]
        members = self.thread_members.get(thread["id"], [])
        if user_id in members:
            members.remove(user_id)
            thread["member_count"] = len(members)
        return 204, None
