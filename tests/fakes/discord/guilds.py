"""Guilds, members, roles, users, permissions and DMs: world building (`add_guild`, `add_member`,
`add_role`, `add_channel`, ...), the GUILD_CREATE payload, REST for users/application/guilds, channel
permission overwrites (`deny`/`allow`) and the checks Discord answers with 403s, DM channels."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import payloads as P
from .core import Call, Core
from .permissions import MEMBER_OVERWRITE, ROLE_OVERWRITE, apply_overwrites, base_permissions, set_overwrite
from .records import ApiError


@dataclass
class GuildState:
    id: str
    name: str
    owner_id: str
    joined_at: str
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    channel_ids: list[str] = field(default_factory=list)
    thread_ids: list[str] = field(default_factory=list)
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # user id -> member (with user)


class GuildsMixin(Core):
    """Guilds, members, roles, users, permissions, DMs."""

    # ------------------------------------------------------------------ world building

    def add_user(self, username: str, *, bot: bool = False) -> dict[str, Any]:
        """A user who is not a member of any guild (see add_member)."""
        data = P.user(self._ids.next(), username, bot=bot)
        self.users[data["id"]] = data
        return data

    def add_guild(
        self, name: str = "Guild", *, channels: Iterable[str] = ("general",), on_shard: tuple[int, int] | None = None
    ) -> str:
        """A guild with @everyone (id == guild id), the bot as a member with a managed role, an owner
        and the given text channels. Returns the guild id. Dispatches GUILD_CREATE if connected.
        `on_shard=(shard_id, num_shards)`: an id that shard owns ((id >> 22) % num_shards == shard_id)."""
        guild_id = self._ids.next()
        if on_shard is not None:
            shard_id, num_shards = on_shard
            ms = int(guild_id) >> 22  # the id's timestamp decides its shard: move it a few ms on
            guild_id = str(((ms + (shard_id - ms) % num_shards) << 22) | (int(guild_id) & ((1 << 22) - 1)))
        owner = self.add_user(f"owner-{len(self.guilds) + 1}")
        guild = GuildState(guild_id, name, owner["id"], P.iso())
        guild.roles[guild_id] = P.role(guild_id, "@everyone", P.EVERYONE_PERMISSIONS)
        bot_role = self._ids.next()
        guild.roles[bot_role] = P.role(bot_role, self.bot_user["username"], P.BOT_PERMISSIONS, position=1, managed=True)
        guild.roles[bot_role]["tags"] = {"bot_id": self.bot_user["id"]}
        self.guilds[guild_id] = guild
        guild.members[owner["id"]] = P.member(owner, [], guild.joined_at)
        guild.members[self.bot_user["id"]] = P.member(self.bot_user, [bot_role], guild.joined_at)
        for channel_name in channels:
            self.add_channel(channel_name, guild_id=guild_id, _dispatch=False)
        if self._connected:
            self._dispatch("GUILD_CREATE", self._guild_create(guild))
        return guild_id

    def add_channel(
        self, name: str, *, guild_id: str | None = None, topic: str | None = None, _dispatch: bool = True
    ) -> str:
        """A text channel; returns its id. Dispatches CHANNEL_CREATE if connected."""
        guild = self.guilds[guild_id or self.guild_id]
        channel_id = self._ids.next()
        data = P.text_channel(channel_id, guild.id, name, len(guild.channel_ids), topic=topic)
        self.channels[channel_id] = data
        guild.channel_ids.append(channel_id)
        if _dispatch and self._connected:
            self._dispatch("CHANNEL_CREATE", data)
        return channel_id

    def add_role(self, name: str, permissions: int | str = 0, *, guild_id: str | None = None) -> str:
        guild = self.guilds[guild_id or self.guild_id]
        role_id = self._ids.next()
        guild.roles[role_id] = P.role(role_id, name, int(permissions), position=len(guild.roles))
        if self._connected:
            self._dispatch("GUILD_ROLE_CREATE", {"guild_id": guild.id, "role": guild.roles[role_id]})
        return role_id

    def add_member(
        self,
        user: str | dict[str, Any],
        *,
        guild_id: str | None = None,
        roles: Iterable[str] = (),
        nick: str | None = None,
        bot: bool = False,
    ) -> dict[str, Any]:
        """Make a user (a username creates one) a member of the guild; returns the user dict."""
        data = self.add_user(user, bot=bot) if isinstance(user, str) else user
        self.users.setdefault(data["id"], data)
        guild = self.guilds[guild_id or self.guild_id]
        guild.members[data["id"]] = P.member(data, list(roles), P.iso(), nick=nick)
        if self._connected:
            self._dispatch("GUILD_MEMBER_ADD", {**guild.members[data["id"]], "guild_id": guild.id})
        return data

    def channel_by_name(self, name: str, guild_id: str | None = None) -> str:
        guild = self.guilds[guild_id or self.guild_id]
        for channel_id in guild.channel_ids + guild.thread_ids:
            if self.channels[channel_id]["name"] == name:
                return channel_id
        raise KeyError(name)

    @staticmethod
    def mention(user: dict[str, Any] | str) -> str:
        """`<@id>` for a user dict or id."""
        return f"<@{user['id'] if isinstance(user, dict) else user}>"

    # ------------------------------------------------------------------ GUILD_CREATE payload

    def _guild_create(self, guild: GuildState) -> dict[str, Any]:
        return {
            "id": guild.id,
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": guild.owner_id,
            "application_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": guild.channel_ids[0] if guild.channel_ids else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "widget_enabled": False,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "vanity_url_code": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": list(guild.roles.values()),
            "joined_at": guild.joined_at,
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),  # == len(members): discord.py need not chunk
            "voice_states": [],
            "members": list(guild.members.values()),
            "channels": [self.channels[c] for c in guild.channel_ids],
            "threads": [
                self.channels[t] for t in guild.thread_ids if not self.channels[t]["thread_metadata"]["archived"]
            ],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "incidents_data": None,
        }

    # ------------------------------------------------------------------ REST: users, application, DMs

    async def _get_me(self, c: Call) -> tuple[int, Any]:
        return 200, P.private_user(self.bot_user)

    async def _get_user(self, c: Call) -> tuple[int, Any]:
        found = self.users.get(c.params["user_id"])
        if found is None:
            raise ApiError(404, 10013, "Unknown User")
        return 200, found

    async def _get_application(self, c: Call) -> tuple[int, Any]:
        owner = self.users[self.guilds[self.guild_id].owner_id]
        return 200, {
            "id": self.application_id,
            "name": self.bot_user["username"],
            "icon": None,
            "description": "",
            "type": None,
            "bot": self.bot_user,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": 0,
            "flags_new": "0",
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "owner": owner,
            "approximate_guild_count": len(self.guilds),
            "approximate_user_install_count": 0,
            "approximate_user_authorization_count": 0,
            "explicit_content_filter": 0,
            "team": None,
            "eligible_oauth2_scopes": [],
            "integration_types_config": {"0": {}},
            "tags": [],
        }

    async def _create_dm(self, c: Call) -> tuple[int, Any]:
        recipient = self.users.get(str(c.json["recipient_id"]))
        if recipient is None:
            raise ApiError(404, 10013, "Unknown User")
        return 200, self.channels[self.dm_channel(recipient)]

    # ------------------------------------------------------------------ REST: guilds

    def _guild(self, c: Call) -> GuildState:
        guild = self.guilds.get(c.params["guild_id"])
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    async def _get_guild(self, c: Call) -> tuple[int, Any]:
        full = self._guild_create(self._guild(c))
        keep = set(self.validator.spec["components"]["schemas"]["GuildResponse"]["properties"])
        out = {k: v for k, v in full.items() if k in keep}
        out.update(home_header=None, region="deprecated", widget_channel_id=None, max_presences=None, nsfw=False)
        return 200, out

    async def _get_guild_channels(self, c: Call) -> tuple[int, Any]:
        return 200, [self.channels[i] for i in self._guild(c).channel_ids]

    async def _get_roles(self, c: Call) -> tuple[int, Any]:
        return 200, list(self._guild(c).roles.values())

    async def _get_member(self, c: Call) -> tuple[int, Any]:
        member = self._guild(c).members.get(c.params["user_id"])
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return 200, member

    async def _get_active_threads(self, c: Call) -> tuple[int, Any]:
        guild = self._guild(c)
        threads = [self.channels[t] for t in guild.thread_ids if not self.channels[t]["thread_metadata"]["archived"]]
        return 200, {"threads": threads, "members": [], "has_more": False}

    # ------------------------------------------------------------------ permissions and DMs

    def channel_permissions(self, user_id: str, channel_id: str) -> int:
        """A member's permissions in a channel or thread, overwrites included (a thread uses its parent's);
        every permission in a DM."""
        channel = self.channels[channel_id]
        guild_id = channel.get("guild_id")
        if not guild_id:
            return P.ALL_PERMISSIONS
        guild = self.guilds[guild_id]
        roles = list(guild.members.get(user_id, {}).get("roles", []))
        base = base_permissions(guild.roles, guild.id, guild.owner_id, user_id, roles)
        if channel["type"] in P.THREAD_TYPES:
            channel = self.channels.get(channel.get("parent_id") or "", channel)
        return apply_overwrites(base, channel.get("permission_overwrites") or [], guild.id, user_id, roles)

    async def deny(
        self, channel_id: str, target: str | dict[str, Any], permissions: int, *, tell_bot: bool = True
    ) -> None:
        """A channel overwrite denying `permissions` to a role (its id) or a member (user dict or id), as a
        moderator sets it. Dispatches CHANNEL_UPDATE; `tell_bot=False` leaves the bot's cache stale, so only
        Discord's REST answers (403 50013 / 50001) tell it."""
        await self._overwrite(channel_id, target, 0, permissions, tell_bot)

    async def allow(
        self, channel_id: str, target: str | dict[str, Any], permissions: int, *, tell_bot: bool = True
    ) -> None:
        """The opposite of `deny`: an overwrite allowing `permissions`."""
        await self._overwrite(channel_id, target, permissions, 0, tell_bot)

    async def _overwrite(
        self, channel_id: str, target: str | dict[str, Any], allow: int, deny: int, tell_bot: bool
    ) -> None:
        channel = self.channels[channel_id]
        target_id = target["id"] if isinstance(target, dict) else target
        is_role = target_id in self.guilds[channel["guild_id"]].roles
        kind = ROLE_OVERWRITE if is_role else MEMBER_OVERWRITE
        set_overwrite(channel, target_id, kind, allow=allow, deny=deny)
        if tell_bot:
            self._dispatch("CHANNEL_UPDATE", copy.deepcopy(channel))
            await self.flush()

    @property
    def bot_role_id(self) -> str:
        """The managed role Discord gives the bot in the default guild (`role.tags.bot_id`)."""
        roles = self.guilds[self.guild_id].roles
        return next(r for r, data in roles.items() if (data.get("tags") or {}).get("bot_id") == self.bot_user["id"])

    def _permissions(self, user_id: str, guild_id: str | None) -> int:
        if not guild_id:
            return P.ALL_PERMISSIONS
        guild = self.guilds[guild_id]
        if user_id == guild.owner_id:
            return P.ALL_PERMISSIONS
        perms = int(guild.roles[guild_id]["permissions"])
        for role_id in guild.members.get(user_id, {}).get("roles", []):
            perms |= int(guild.roles[role_id]["permissions"])
        return P.ALL_PERMISSIONS if perms & P.ADMINISTRATOR else perms

    def _require(self, channel_id: str, needed: int) -> None:
        """Answer as Discord does when the bot lacks a permission: Missing Access without View Channel,
        else Missing Permissions."""
        if not self.channels[channel_id].get("guild_id"):
            return
        have = self.channel_permissions(self.bot_user["id"], channel_id)
        if not have & P.VIEW_CHANNEL:
            raise ApiError(403, 50001, "Missing Access")
        if have & needed != needed:
            raise ApiError(403, 50013, "Missing Permissions")

    def _check_post(self, channel: dict[str, Any], body: dict[str, Any]) -> None:
        if channel["type"] == P.DM:
            if channel["recipients"][0]["id"] in self.closed_dms:
                raise ApiError(403, 50007, "Cannot send messages to this user")
            return
        thread = channel["type"] in P.THREAD_TYPES
        self._require(channel["id"], P.SEND_MESSAGES_IN_THREADS if thread else P.SEND_MESSAGES)
        if body.get("poll"):
            self._require(channel["id"], P.SEND_POLLS)
        if body.get("message_reference") and not (
            self.channel_permissions(self.bot_user["id"], channel["id"]) & P.READ_MESSAGE_HISTORY
        ):
            raise ApiError(403, 160002, "Cannot reply without permission to read message history")

    def dm_channel(self, user: dict[str, Any] | None = None) -> str:
        """The id of the bot's DM channel with `user` (default `user`), created on first use."""
        recipient = user or self.user
        for ch in self.channels.values():
            if ch["type"] == P.DM and ch["recipients"][0]["id"] == recipient["id"]:
                return str(ch["id"])
        channel: dict[str, Any] = {
            "id": self._ids.next(),
            "type": P.DM,
            "flags": 0,
            "last_message_id": None,
            "recipients": [recipient],
        }
        self.channels[channel["id"]] = channel
        return str(channel["id"])

    def close_dms(self, user: dict[str, Any] | None = None) -> None:
        """`user` (default `user`) accepts no DMs from the bot: posting there answers 403 50007."""
        self.closed_dms.add((user or self.user)["id"])
