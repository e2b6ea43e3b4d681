"""Channels and messages: human messages (`send_message`, `send_system_message`), REST for channels,
messages, reactions and typing, message building/editing/deleting with the gateway echoes, mentions,
replies, and attachments (stored in `cdn`, served by core.py's `_entry`)."""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from . import payloads as P
from .core import ATTACHMENT_SIZE_LIMIT, Call, Core
from .records import ApiError, RecordedFile

MAX_CONTENT = 2000  # the docs' limit (the spec snapshot says 4000 for channel messages)
MAX_POLL_ANSWER = 55  # the docs' limit for an answer's text (the spec says 300, the question's)

_MENTION_RE = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION_RE = re.compile(r"<@&(\d+)>")


class MessagesMixin(Core):
    """Channels, messages, reactions, typing, attachments."""

    # ------------------------------------------------------------------ test-facing

    def messages_in(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        """Current messages of a channel or thread (after edits, without deleted ones), oldest first."""
        ids = self._channel_messages.get(channel_id or self.channel_id, [])
        return [self.messages[i] for i in ids if i in self.messages]

    def bot_messages(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        """messages_in(...) written by the bot (channel messages and interaction responses)."""
        return [m for m in self.messages_in(channel_id) if m["author"]["id"] == self.bot_user["id"]]

    async def send_message(
        self,
        content: str = "",
        *,
        author: dict[str, Any] | None = None,
        channel_id: str | None = None,
        mentions: Iterable[dict[str, Any] | str] = (),
        attachments: Iterable[dict[str, Any] | tuple[str, bytes]] = (),
        bot: bool = False,
        reply_to: dict[str, Any] | str | None = None,
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE from a human (default `user`; `bot=True` makes the author a bot). Mentions in
        `content` (`<@id>`, see `mention`) and in `mentions` are resolved. Returns the message."""
        channel_id = channel_id or self.channel_id
        channel = self.channels[channel_id]
        if author is None:
            author = self.add_member(f"bot-{len(self.users)}", bot=True) if bot else self.user
        atts = [self.make_attachment(*a, channel_id=channel_id) if isinstance(a, tuple) else a for a in attachments]
        msg = P.message(self._ids.next(), channel_id, author, content, attachments=atts)
        msg["mentions"] = self._mentions(content, mentions)
        msg["mention_roles"] = self._role_mentions(content, channel)
        if reply_to is not None:
            self._set_reference(msg, reply_to if isinstance(reply_to, str) else reply_to["id"])
        msg["nonce"] = str(secrets.randbits(60))
        if channel["type"] in P.THREAD_TYPES and channel["thread_metadata"]["archived"]:
            # A message unarchives the thread; a locked one only takes messages from thread managers.
            if channel["thread_metadata"]["locked"] and not (
                self._permissions(author["id"], channel["guild_id"]) & P.MANAGE_THREADS
            ):
                raise ValueError(f"{author['username']} cannot post in locked archived thread {channel_id}")
            self._unarchive(channel)
        self._store_message(msg)  # dispatches MESSAGE_CREATE
        await self.flush()
        return msg

    def make_attachment(
        self, filename: str, data: bytes, *, content_type: str | None = None, channel_id: str | None = None
    ) -> dict[str, Any]:
        """An attachment object whose `url` serves `data` from this fake (so `Attachment.read()` works)."""
        return self._attachment(channel_id or self.channel_id, filename, data, content_type)

    async def send_system_message(
        self,
        type_: int,
        content: str = "",
        *,
        channel_id: str | None = None,
        author: dict[str, Any] | None = None,
        reference: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A system message (MESSAGE_CREATE of a non-default type), e.g. 6 pinned (`reference`: the pinned
        message), 7 member joined, 4 channel/thread renamed (`content`: the new name), 18 thread created."""
        channel_id = channel_id or self.channel_id
        msg = P.message(self._ids.next(), channel_id, author or self.user, content, type_=type_)
        if reference is not None:
            self._set_reference(msg, reference["id"], reference["channel_id"])
            msg["type"] = type_  # _set_reference marks replies; this is not one
        self._store_message(msg)
        await self.flush()
        return msg

    async def edit_message_as_user(self, message: dict[str, Any], content: str) -> dict[str, Any]:
        """A human edits their own message: the content changes and MESSAGE_UPDATE is dispatched."""
        msg = self._message(message["channel_id"], message["id"])
        msg = self._edit(msg, {"content": content}, [])
        await self.flush()
        return msg

    async def delete_message_as_user(self, message: dict[str, Any]) -> None:
        """A human (or a moderator) deletes a message: MESSAGE_DELETE is dispatched."""
        self._delete(self._message(message["channel_id"], message["id"]))
        await self.flush()

    async def bulk_delete(self, messages: Iterable[dict[str, Any]]) -> None:
        """A moderator (or a moderation bot) purges messages of one channel: one MESSAGE_DELETE_BULK."""
        found = [self._message(m["channel_id"], m["id"]) for m in messages]
        if not found:
            return
        channel_id = found[0]["channel_id"]
        for msg in found:
            del self.messages[msg["id"]]
        event: dict[str, Any] = {"ids": [m["id"] for m in found], "channel_id": channel_id}
        if gid := self.channels.get(channel_id, {}).get("guild_id"):
            event["guild_id"] = gid
        self._dispatch("MESSAGE_DELETE_BULK", event)
        await self.flush()

    async def pin(self, message: dict[str, Any]) -> None:
        """Pin a message (as a moderator would): it shows up in the channel's pins, newest pin first.
        Dispatches MESSAGE_UPDATE (pinned) and CHANNEL_PINS_UPDATE."""
        msg = self._message(message["channel_id"], message["id"])
        msg["pinned"] = True
        self._pins.setdefault(msg["channel_id"], []).insert(0, (msg["id"], P.iso()))
        await self._pins_changed(msg)

    async def unpin(self, message: dict[str, Any]) -> None:
        """The opposite of `pin`."""
        msg = self._message(message["channel_id"], message["id"])
        msg["pinned"] = False
        pins = self._pins.get(msg["channel_id"], [])
        pins[:] = [(i, at) for i, at in pins if i != msg["id"]]
        await self._pins_changed(msg)

    async def _pins_changed(self, msg: dict[str, Any]) -> None:
        self._dispatch("MESSAGE_UPDATE", self._gateway_message(msg))
        pins = self._pins.get(msg["channel_id"], [])
        event: dict[str, Any] = {"channel_id": msg["channel_id"], "last_pin_timestamp": pins[0][1] if pins else None}
        if gid := self.channels[msg["channel_id"]].get("guild_id"):
            event["guild_id"] = gid
        self._dispatch("CHANNEL_PINS_UPDATE", event)
        await self.flush()

    # ------------------------------------------------------------------ REST: channels and messages

    def _channel(self, channel_id: str) -> dict[str, Any]:
        ch = self.channels.get(channel_id)
        if ch is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return ch

    def _message(self, channel_id: str, message_id: str) -> dict[str, Any]:
        self._channel(channel_id)
        msg = self.messages.get(message_id)
        if msg is None or msg["channel_id"] != channel_id:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    async def _get_channel(self, c: Call) -> tuple[int, Any]:
        channel = self._channel(c.params["channel_id"])
        self._require(channel["id"], 0)
        return 200, channel

    async def _patch_channel(self, c: Call) -> tuple[int, Any]:
        ch = self._channel(c.params["channel_id"])
        body = c.json or {}
        if ch["type"] in P.THREAD_TYPES:
            meta = ch["thread_metadata"]
            for key in ("archived", "locked", "auto_archive_duration", "invitable"):
                if body.get(key) is not None:
                    meta[key] = body[key]
            if body.get("archived") is not None:
                meta["archive_timestamp"] = P.iso()
            event = "THREAD_UPDATE"
        else:
            for key in ("topic", "nsfw", "position"):
                if key in body:
                    ch[key] = body[key]
            event = "CHANNEL_UPDATE"
        for key in ("name", "rate_limit_per_user", "flags"):
            if body.get(key) is not None:
                ch[key] = body[key]
        self._dispatch(event, copy.deepcopy(ch))
        await self.flush()
        return 200, ch

    async def _delete_channel(self, c: Call) -> tuple[int, Any]:
        ch = self._channel(c.params["channel_id"])
        del self.channels[ch["id"]]
        if ch.get("guild_id"):
            guild = self.guilds[ch["guild_id"]]
            for ids in (guild.channel_ids, guild.thread_ids):
                if ch["id"] in ids:
                    ids.remove(ch["id"])
        self._dispatch("THREAD_DELETE" if ch["type"] in P.THREAD_TYPES else "CHANNEL_DELETE", ch)
        await self.flush()
        return 200, ch

    async def _get_messages(self, c: Call) -> tuple[int, Any]:
        self._channel(c.params["channel_id"])
        msgs = self.messages_in(c.params["channel_id"])
        if "before" in c.query:
            msgs = [m for m in msgs if int(m["id"]) < int(c.query["before"])]
        if "after" in c.query:
            msgs = [m for m in msgs if int(m["id"]) > int(c.query["after"])]
        limit = int(c.query.get("limit", 50))
        newest_first = list(reversed(msgs))
        if "after" in c.query:  # Discord returns the oldest `limit` after the id, newest first
            newest_first = newest_first[-limit:]
        return 200, newest_first[:limit]

    async def _get_pins(self, c: Call) -> tuple[int, Any]:
        """GET /channels/{id}/messages/pins: {items: [{pinned_at, message}], has_more}, newest pin first."""
        channel = self._channel(c.params["channel_id"])
        self._require(channel["id"], P.READ_MESSAGE_HISTORY)
        pins = [(i, at) for i, at in self._pins.get(channel["id"], []) if i in self.messages]
        if "before" in c.query:
            pins = [(i, at) for i, at in pins if at < c.query["before"]]
        limit = int(c.query.get("limit", 50))
        items = [{"pinned_at": at, "message": self.messages[i]} for i, at in pins[:limit]]
        return 200, {"items": items, "has_more": len(pins) > limit}

    async def _get_message(self, c: Call) -> tuple[int, Any]:
        msg = self._message(c.params["channel_id"], c.params["message_id"])
        self._require(msg["channel_id"], P.READ_MESSAGE_HISTORY)
        return 200, msg

    async def _post_message(self, c: Call) -> tuple[int, Any]:
        ch = self._channel(c.params["channel_id"])
        body = c.json or {}
        self._check_post(ch, body)
        if ch["type"] in P.THREAD_TYPES and ch["thread_metadata"]["archived"]:
            self._unarchive(ch)  # sending in an archived thread unarchives it (the bot can manage threads)
        ref = body.get("message_reference")
        msg = self._build_message(ch["id"], self.bot_user, body, c.files, type_=19 if ref else 0)
        if ref:
            self._set_reference(msg, str(ref["message_id"]), str(ref.get("channel_id") or ch["id"]))
        if body.get("nonce") is not None:
            msg["nonce"] = body["nonce"]
        self._store_message(msg)
        await self.flush()
        return 200, msg

    async def _patch_message(self, c: Call) -> tuple[int, Any]:
        msg = self._message(c.params["channel_id"], c.params["message_id"])
        if msg["author"]["id"] != self.bot_user["id"] or msg.get("webhook_id"):
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        msg = self._edit(msg, c.json or {}, c.files)
        await self.flush()
        return 200, msg

    async def _delete_message(self, c: Call) -> tuple[int, Any]:
        self._delete(self._message(c.params["channel_id"], c.params["message_id"]))
        await self.flush()
        return 204, None

    async def _add_reaction(self, c: Call) -> tuple[int, Any]:
        msg = self._message(c.params["channel_id"], c.params["message_id"])
        name = c.params["emoji"]
        emoji: dict[str, Any] = {"id": None, "name": name}
        if ":" in name:  # custom emoji "name:id"
            emoji = {"name": name.split(":")[0], "id": name.split(":")[1]}
        reactions = msg.setdefault("reactions", [])
        entry = next((r for r in reactions if r["emoji"] == emoji), None)
        if entry is None:
            entry = {"emoji": emoji, "count": 0, "me": False, "count_details": {"burst": 0, "normal": 0}}
            entry.update(me_burst=False, burst_colors=[], burst_count=0)
            reactions.append(entry)
        if not entry["me"]:
            entry.update(me=True, count=entry["count"] + 1)
            entry["count_details"]["normal"] += 1
            event = {
                "user_id": self.bot_user["id"],
                "channel_id": msg["channel_id"],
                "message_id": msg["id"],
                "emoji": emoji,
                "burst": False,
                "type": 0,
            }
            if gid := self.channels[msg["channel_id"]].get("guild_id"):
                event["guild_id"] = gid
            self._dispatch("MESSAGE_REACTION_ADD", event)
        await self.flush()
        return 204, None

    async def _remove_reaction(self, c: Call) -> tuple[int, Any]:
        msg = self._message(c.params["channel_id"], c.params["message_id"])
        name = c.params["emoji"]
        for r in msg.get("reactions", []):
            if r["emoji"]["name"] == name.split(":")[0] and r["me"]:
                r.update(me=False, count=r["count"] - 1)
        msg["reactions"] = [r for r in msg.get("reactions", []) if r["count"] > 0]
        return 204, None

    async def _typing(self, c: Call) -> tuple[int, Any]:
        self._channel(c.params["channel_id"])
        return 204, None

    # ------------------------------------------------------------------ messages (internals)

    def _build_message(
        self,
        channel_id: str,
        author: dict[str, Any],
        body: dict[str, Any],
        files: list[RecordedFile],
        *,
        type_: int = 0,
        flags: int | None = None,
        allow_empty: bool = False,
    ) -> dict[str, Any]:
        content = body.get("content") or ""
        attachments = self._attachments(channel_id, body.get("attachments"), files, [])
        embeds = [self._embed(e) for e in body.get("embeds") or []]
        components = self._components(body.get("components") or [])
        if not allow_empty and not (
            content or embeds or attachments or components or body.get("sticker_ids") or body.get("poll")
        ):
            raise ApiError(400, 50006, "Cannot send an empty message")
        self._check_content(content)
        msg = P.message(
            self._ids.next(),
            channel_id,
            author,
            content,
            type_=type_,
            flags=(body.get("flags") or 0) if flags is None else flags,
            embeds=embeds,
            components=components,
            attachments=attachments,
        )
        msg["mentions"] = self._mentions(content, ())
        if body.get("poll"):
            msg["poll"] = self._poll(body["poll"])
        return msg

    @staticmethod
    def _poll(poll: dict[str, Any]) -> dict[str, Any]:
        """A PollResponse for a PollCreateRequest (its shape already checked against the spec). Discord's own
        limits the spec does not state: an answer's text is at most 55 characters, and every part has text."""
        answers = poll["answers"]
        for i, answer in enumerate(answers):
            text = (answer.get("poll_media") or {}).get("text") or ""
            if not text or len(text) > MAX_POLL_ANSWER:
                err = {"code": "BASE_TYPE_BAD_LENGTH", "message": f"Must be between 1 and {MAX_POLL_ANSWER} in length."}
                raise ApiError(400, 50035, "Invalid Form Body", {"poll": {"answers": {str(i): {"_errors": [err]}}}})
        if not (poll.get("question") or {}).get("text"):
            err = {"code": "BASE_TYPE_REQUIRED", "message": "This field is required"}
            raise ApiError(400, 50035, "Invalid Form Body", {"poll": {"question": {"_errors": [err]}}})
        hours = poll.get("duration") or 24
        expiry = datetime.now(UTC) + timedelta(hours=hours)
        return {
            "question": {"text": poll["question"]["text"]},
            "answers": [
                {"answer_id": i, "poll_media": {"text": a["poll_media"]["text"]}} for i, a in enumerate(answers, 1)
            ],
            "expiry": expiry.isoformat(),
            "allow_multiselect": bool(poll.get("allow_multiselect")),
            "layout_type": poll.get("layout_type") or 1,
            "results": {"answer_counts": [], "is_finalized": False},
        }

    @staticmethod
    def _check_content(content: str) -> None:
        if len(content) > MAX_CONTENT:
            err = {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {MAX_CONTENT} or fewer in length."}
            raise ApiError(400, 50035, "Invalid Form Body", {"content": {"_errors": [err]}})

    def _edit(self, msg: dict[str, Any], body: dict[str, Any], files: list[RecordedFile]) -> dict[str, Any]:
        """PATCH semantics: absent fields stay, null clears. Dispatches MESSAGE_UPDATE."""
        if "content" in body:
            content = body["content"] or ""
            self._check_content(content)
            msg["content"] = content
            msg["mentions"] = self._mentions(content, ())
        if "embeds" in body:
            msg["embeds"] = [self._embed(e) for e in body["embeds"] or []]
        if "components" in body:
            msg["components"] = self._components(body["components"] or [])
        if "attachments" in body or files:
            keep = body.get("attachments") if "attachments" in body else None
            msg["attachments"] = self._attachments(msg["channel_id"], keep, files, msg["attachments"])
        if not (msg["content"] or msg["embeds"] or msg["attachments"] or msg["components"]):
            raise ApiError(400, 50006, "Cannot send an empty message")
        msg["flags"] &= ~P.FLAG_LOADING
        msg["edited_timestamp"] = P.iso()
        if not msg["flags"] & P.FLAG_EPHEMERAL:
            self._dispatch("MESSAGE_UPDATE", self._gateway_message(msg))
        return msg

    def _delete(self, msg: dict[str, Any]) -> None:
        del self.messages[msg["id"]]
        event = {"id": msg["id"], "channel_id": msg["channel_id"]}
        if gid := self.channels.get(msg["channel_id"], {}).get("guild_id"):
            event["guild_id"] = gid
        if not msg["flags"] & P.FLAG_EPHEMERAL:
            self._dispatch("MESSAGE_DELETE", event)

    def _store_message(self, msg: dict[str, Any], *, echo: bool = True) -> None:
        """Store, bump channel counters and echo MESSAGE_CREATE (ephemeral messages are not echoed)."""
        self.messages[msg["id"]] = msg
        self._channel_messages.setdefault(msg["channel_id"], []).append(msg["id"])
        ch = self.channels.get(msg["channel_id"])
        if ch is not None:
            ch["last_message_id"] = msg["id"]
            if ch["type"] in P.THREAD_TYPES:
                ch["message_count"] += 1
                ch["total_message_sent"] += 1
        if echo:
            self._dispatch("MESSAGE_CREATE", self._gateway_message(msg))

    def _gateway_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A message as MESSAGE_CREATE/UPDATE carries it: plus guild_id and the author's member."""
        out = copy.deepcopy(msg)
        guild_id = self.channels.get(msg["channel_id"], {}).get("guild_id")
        if guild_id:
            out["guild_id"] = guild_id
            member = self.guilds[guild_id].members.get(msg["author"]["id"])
            if member is not None and not msg.get("webhook_id"):
                out["member"] = {k: v for k, v in member.items() if k != "user"}
            for mentioned in out["mentions"]:
                m = self.guilds[guild_id].members.get(mentioned["id"])
                if m is not None:
                    mentioned["member"] = {k: v for k, v in m.items() if k != "user"}
        return out

    def _mentions(self, content: str, extra: Iterable[dict[str, Any] | str]) -> list[dict[str, Any]]:
        ids = list(
            dict.fromkeys([*_MENTION_RE.findall(content), *(u["id"] if isinstance(u, dict) else u for u in extra)])
        )
        return [copy.deepcopy(self.users[i]) for i in ids if i in self.users]

    def _role_mentions(self, content: str, channel: dict[str, Any]) -> list[str]:
        roles = self.guilds[channel["guild_id"]].roles if channel.get("guild_id") else {}
        return [r for r in dict.fromkeys(_ROLE_MENTION_RE.findall(content)) if r in roles]

    def _set_reference(self, msg: dict[str, Any], message_id: str, channel_id: str | None = None) -> None:
        channel_id = channel_id or msg["channel_id"]
        ref: dict[str, Any] = {"type": 0, "message_id": message_id, "channel_id": channel_id}
        if gid := self.channels.get(channel_id, {}).get("guild_id"):
            ref["guild_id"] = gid
        msg["message_reference"] = ref
        msg["type"] = 19
        target = self.messages.get(message_id)
        if target is not None:
            msg["referenced_message"] = {k: copy.deepcopy(v) for k, v in target.items() if k != "referenced_message"}

    # ------------------------------------------------------------------ attachments (CDN), embeds, components

    def _attachment(self, channel_id: str, filename: str, data: bytes, content_type: str | None) -> dict[str, Any]:
        att_id = self._ids.next()
        path = f"/attachments/{channel_id}/{att_id}/{filename}"
        ctype = content_type or ("image/png" if filename.lower().endswith(".png") else "application/octet-stream")
        self.cdn[path] = (data, ctype)
        att: dict[str, Any] = {
            "id": att_id,
            "filename": filename,
            "size": len(data),
            "url": f"{self.url}{path}",
            "proxy_url": f"{self.url}{path}",
            "content_type": ctype,
        }
        if size := P.image_size(data):
            att["width"], att["height"] = size
        return att

    def _attachments(
        self,
        channel_id: str,
        wanted: list[dict[str, Any]] | None,
        files: list[RecordedFile],
        existing: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Resolve a body's `attachments` (existing ids kept, `files[n]` uploads matched by id n)."""
        by_index: dict[int, RecordedFile] = {}
        for f in files:
            found = re.fullmatch(r"files\[(\d+)\]", f.field_name) or re.fullmatch(r"file(\d*)", f.field_name)
            by_index[int(found.group(1) or 0) if found else len(by_index)] = f
        for f in files:
            if f.size > ATTACHMENT_SIZE_LIMIT:
                raise ApiError(413, 40005, "Request entity too large")
        out: list[dict[str, Any]] = []
        used: set[int] = set()
        if wanted is None:
            out = list(existing)
        else:
            current = {a["id"]: a for a in existing}
            for item in wanted:
                key = str(item.get("id"))
                if key in current:
                    out.append(current[key])
                elif key.isdigit() and int(key) in by_index:
                    f = by_index[int(key)]
                    att = self._attachment(channel_id, item.get("filename") or f.filename, f.data, f.content_type)
                    if item.get("description"):
                        att["description"] = item["description"]
                    out.append(att)
                    used.add(int(key))
        for index, f in sorted(by_index.items()):
            if index not in used:
                out.append(self._attachment(channel_id, f.filename, f.data, f.content_type))
        return out

    @staticmethod
    def _embed(embed: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in embed.items() if v is not None}
        out.setdefault("type", "rich")
        return out

    def _components(self, components: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Discord numbers components (`id`) in its responses."""
        counter = iter(range(1, 1000))

        def number(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            out = []
            for item in items:
                item = {k: v for k, v in item.items() if v is not None}
                item.setdefault("id", next(counter))
                if "components" in item:
                    item["components"] = number(item["components"])
                out.append(item)
            return out

        return number(components)
