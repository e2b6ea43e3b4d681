"""Builders for Discord JSON objects (users, members, roles, channels, threads, messages).

Shapes follow Discord's docs and the OpenAPI response schemas; REST responses built from them are
validated against tests/discord-openapi.json by the server.
"""

from __future__ import annotations

import datetime as dt
import itertools
import struct
from typing import Any

DISCORD_EPOCH_MS = 1_420_070_400_000

# Permission bits used by the fake (https://discord.com/developers/docs/topics/permissions).
ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
ADD_REACTIONS = 1 << 6
VIEW_CHANNEL = 1 << 10
SEND_MESSAGES = 1 << 11
MANAGE_MESSAGES = 1 << 13
EMBED_LINKS = 1 << 14
ATTACH_FILES = 1 << 15
READ_MESSAGE_HISTORY = 1 << 16
USE_EXTERNAL_EMOJIS = 1 << 18
USE_APPLICATION_COMMANDS = 1 << 31
MANAGE_THREADS = 1 << 34
CREATE_PUBLIC_THREADS = 1 << 35
CREATE_PRIVATE_THREADS = 1 << 36
SEND_MESSAGES_IN_THREADS = 1 << 38
SEND_POLLS = 1 << 49
ALL_PERMISSIONS = (1 << 51) - 1

EVERYONE_PERMISSIONS = (
    ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | USE_EXTERNAL_EMOJIS
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | CREATE_PRIVATE_THREADS
    | SEND_MESSAGES_IN_THREADS
)
# Send Polls is on for @everyone in a new Discord server; given to the bot's role here so tests that set
# @everyone's permissions by hand keep their exact values.
BOT_PERMISSIONS = EVERYONE_PERMISSIONS | MANAGE_MESSAGES | MANAGE_THREADS | SEND_POLLS

# Channel types.
GUILD_TEXT = 0
DM = 1
PUBLIC_THREAD = 11
PRIVATE_THREAD = 12
THREAD_TYPES = (10, PUBLIC_THREAD, PRIVATE_THREAD)

# Message flags.
FLAG_HAS_THREAD = 1 << 5
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7


class Snowflakes:
    """Monotonic snowflake ids; `at` makes an id whose timestamp is that moment."""

    def __init__(self) -> None:
        self._counter = itertools.count(1)
        self._last = 0

    def next(self, at: dt.datetime | None = None) -> str:
        if at is not None:
            ms = int(at.timestamp() * 1000)
            return str(((ms - DISCORD_EPOCH_MS) << 22) | (next(self._counter) & 0xFFF))
        ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        value = max(((ms - DISCORD_EPOCH_MS) << 22) | (next(self._counter) & 0xFFF), self._last + 1)
        self._last = value
        return str(value)


def snowflake_time(snowflake: str | int) -> dt.datetime:
    ms = (int(snowflake) >> 22) + DISCORD_EPOCH_MS
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def iso(moment: dt.datetime | None = None) -> str:
    return (moment or dt.datetime.now(dt.UTC)).isoformat(timespec="microseconds")


def user(user_id: str, username: str, *, bot: bool = False, global_name: str | None = None) -> dict[str, Any]:
    """A UserResponse (public user object)."""
    data: dict[str, Any] = {
        "id": user_id,
        "username": username,
        "avatar": None,
        "discriminator": "0",
        "public_flags": 0,
        "flags": 0,
        "global_name": global_name if global_name is not None else (None if bot else username.title()),
        "primary_guild": None,
        "banner": None,
        "accent_color": None,
        "avatar_decoration_data": None,
        "collectibles": None,
    }
    if bot:
        data["bot"] = True
    return data


def private_user(public: dict[str, Any]) -> dict[str, Any]:
    """A UserPIIResponse (GET /users/@me, READY.user)."""
    return {**public, "mfa_enabled": False, "locale": "en-US", "verified": True, "email": None}


def role(role_id: str, name: str, permissions: int, *, position: int = 0, managed: bool = False) -> dict[str, Any]:
    return {
        "id": role_id,
        "name": name,
        "description": None,
        "permissions": str(permissions),
        "position": position,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "managed": managed,
        "mentionable": False,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }


def member(user_data: dict[str, Any], roles: list[str], joined_at: str, *, nick: str | None = None) -> dict[str, Any]:
    """A guild member as sent in GUILD_CREATE (with `user`)."""
    return {
        "user": user_data,
        "roles": list(roles),
        "joined_at": joined_at,
        "nick": nick,
        "avatar": None,
        "banner": None,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
        "communication_disabled_until": None,
    }


def text_channel(channel_id: str, guild_id: str, name: str, position: int, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": channel_id,
        "type": GUILD_TEXT,
        "guild_id": guild_id,
        "name": name,
        "position": position,
        "flags": 0,
        "parent_id": None,
        "topic": None,
        "nsfw": False,
        "last_message_id": None,
        "last_pin_timestamp": None,
        "rate_limit_per_user": 0,
        "permission_overwrites": [],
        "default_auto_archive_duration": 1440,
        "default_thread_rate_limit_per_user": 0,
    }
    data.update(extra)
    return data


def thread(
    thread_id: str,
    guild_id: str,
    parent_id: str,
    name: str,
    owner_id: str,
    *,
    type_: int = PUBLIC_THREAD,
    auto_archive_duration: int = 1440,
    invitable: bool = True,
) -> dict[str, Any]:
    now = iso()
    metadata: dict[str, Any] = {
        "archived": False,
        "archive_timestamp": now,
        "auto_archive_duration": auto_archive_duration,
        "locked": False,
        "create_timestamp": now,
    }
    if type_ == PRIVATE_THREAD:
        metadata["invitable"] = invitable
    return {
        "id": thread_id,
        "type": type_,
        "guild_id": guild_id,
        "parent_id": parent_id,
        "name": name,
        "owner_id": owner_id,
        "flags": 0,
        "last_message_id": None,
        "last_pin_timestamp": None,
        "rate_limit_per_user": 0,
        "thread_metadata": metadata,
        "message_count": 0,
        "member_count": 1,
        "total_message_sent": 0,
        "applied_tags": [],
    }


def thread_member(thread_id: str, user_id: str) -> dict[str, Any]:
    return {"id": thread_id, "user_id": user_id, "join_timestamp": iso(), "flags": 0}


def message(
    message_id: str,
    channel_id: str,
    author: dict[str, Any],
    content: str = "",
    *,
    type_: int = 0,
    flags: int = 0,
    embeds: list[Any] | None = None,
    components: list[Any] | None = None,
    attachments: list[Any] | None = None,
    mentions: list[Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """A MessageResponse."""
    return {
        "id": message_id,
        "channel_id": channel_id,
        "type": type_,
        "content": content,
        "author": author,
        "mentions": list(mentions or []),
        "mention_roles": [],
        "mention_everyone": False,
        "attachments": list(attachments or []),
        "embeds": list(embeds or []),
        "components": list(components or []),
        "timestamp": timestamp or iso(),
        "edited_timestamp": None,
        "flags": flags,
        "pinned": False,
        "tts": False,
    }


def image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of a PNG (Discord reports them for image attachments)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    return None
