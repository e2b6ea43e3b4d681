"""Interactions: sending them as a user (`send_interaction`, `send_context_menu`, `send_autocomplete`,
`send_component`, `submit_modal`), the bot's answers (POST callback, @original GET/PATCH/DELETE, followups) with
Discord's deadlines, and `interaction_response` summarising them."""

from __future__ import annotations

import copy
import datetime as dt
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from . import payloads as P
from .core import ATTACHMENT_SIZE_LIMIT, Call, Core
from .records import ApiError, Interaction, InteractionSummary, RecordedFile, Step

CALLBACK_DEADLINE = dt.timedelta(seconds=3)  # an interaction must be acknowledged within 3 s
TOKEN_LIFETIME = dt.timedelta(minutes=15)  # interaction tokens (followups, @original) expire
CHAT_INPUT_COMMAND, USER_COMMAND, MESSAGE_COMMAND = 1, 2, 3  # application command types


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class InteractionsMixin(Core):
    """Interactions in both directions."""

    # ------------------------------------------------------------------ test-facing: acting as users

    async def send_interaction(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        subcommand: str | Iterable[str] | None = None,
        user: dict[str, Any] | None = None,
        permissions: int | str | None = None,
        channel_id: str | None = None,
        created_at: dt.datetime | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        """Dispatch INTERACTION_CREATE for slash command `name` (options typed from the synced command,
        else inferred from the Python values) and return its record once the frame is written.

        subcommand: "sub" or "group sub". permissions: the member's permission bits in the channel
        (default: from roles; Administrator expands to every bit as on Discord). Option values: str,
        int, float, bool, a user dict (USER), a channel id for CHANNEL options, or for ATTACHMENT
        options a (filename, bytes) tuple or an attachment dict from `make_attachment`."""
        channel_id = channel_id or self.channel_id
        path = subcommand.split() if isinstance(subcommand, str) else list(subcommand or ())
        command, scope = self._find_command(name, self.channels[channel_id].get("guild_id"))
        opts, resolved = self._build_options(command, path, dict(options or {}), channel_id)
        data: dict[str, Any] = {
            "id": command["id"] if command else self._ids.next(),
            "name": name,
            "type": 1,
            "options": opts,
        }
        if resolved:
            data["resolved"] = resolved
        if scope != "global":
            data["guild_id"] = scope
        return await self._send_interaction(2, data, name, user, permissions, channel_id, created_at, locale)

    async def send_context_menu(
        self,
        name: str,
        message: dict[str, Any] | str,
        *,
        user: dict[str, Any] | None = None,
        permissions: int | str | None = None,
        created_at: dt.datetime | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        """A message context menu (right-click a message -> Apps -> `name`): APPLICATION_COMMAND of command
        type MESSAGE (3), with `data.target_id` and the message in `data.resolved.messages`, in its channel."""
        msg = self.messages[message if isinstance(message, str) else message["id"]]
        channel_id = msg["channel_id"]
        command, scope = self._find_command(name, self.channels[channel_id].get("guild_id"))
        if command is not None and command.get("type") != MESSAGE_COMMAND:
            raise ValueError(f"{name!r} is not a message command")
        data: dict[str, Any] = {
            "id": command["id"] if command else self._ids.next(),
            "name": name,
            "type": MESSAGE_COMMAND,
            "target_id": msg["id"],
            "resolved": {"messages": {msg["id"]: copy.deepcopy(msg)}},
        }
        if scope != "global":
            data["guild_id"] = scope
        return await self._send_interaction(2, data, name, user, permissions, channel_id, created_at, locale)

    async def send_autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        subcommand: str | Iterable[str] | None = None,
        user: dict[str, Any] | None = None,
        channel_id: str | None = None,
    ) -> Interaction:
        """APPLICATION_COMMAND_AUTOCOMPLETE with option `focused` being typed; the bot answers type 8."""
        channel_id = channel_id or self.channel_id
        path = subcommand.split() if isinstance(subcommand, str) else list(subcommand or ())
        command, scope = self._find_command(name, self.channels[channel_id].get("guild_id"))
        opts, _ = self._build_options(command, path, dict(options), channel_id, focused=focused)
        data: dict[str, Any] = {"id": command["id"] if command else self._ids.next(), "name": name, "type": 1}
        data["options"] = opts
        if scope != "global":
            data["guild_id"] = scope
        return await self._send_interaction(4, data, name, user, None, channel_id, None, "en-US")

    async def send_component(
        self,
        message: dict[str, Any] | str,
        custom_id: str,
        *,
        component_type: int = 2,
        values: list[str] | None = None,
        user: dict[str, Any] | None = None,
    ) -> Interaction:
        """MESSAGE_COMPONENT interaction: a click on button `custom_id` (or select `values`) of a message."""
        msg = self.messages[message if isinstance(message, str) else message["id"]]
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        it = await self._send_interaction(3, data, custom_id, user, None, msg["channel_id"], None, "en-US", message=msg)
        return it

    async def submit_modal(
        self,
        custom_id: str,
        values: Mapping[str, str],
        *,
        user: dict[str, Any] | None = None,
        guild_id: str | None = None,
        channel_id: str | None = None,
    ) -> Interaction:
        """MODAL_SUBMIT: the user fills in and submits modal `custom_id` (text input custom_id -> value).

        The submit mirrors the layout of the modal the bot showed (action rows or labels) and, like Discord,
        is tied to the interaction that opened it (its channel, and its message for a component). Without a
        shown modal, the values go in action rows in `channel_id` (default: the guild's first channel)."""
        trigger = next(
            (
                it
                for it in reversed(self.interactions.values())
                if it.modal is not None
                and it.modal.get("custom_id") == custom_id
                and (user is None or it.user["id"] == user["id"])
            ),
            None,
        )
        layout = trigger.modal["components"] if trigger is not None and trigger.modal else []
        components = self._modal_values(layout, dict(values))
        message = None
        if trigger is not None:
            user = user or trigger.user
            channel_id = channel_id or trigger.channel_id
            message = self.messages.get(trigger.message_id or "")
        elif channel_id is None and guild_id is not None:
            channel_id = self.guilds[guild_id].channel_ids[0]
        data: dict[str, Any] = {"custom_id": custom_id, "components": components}
        # The same member submits: same permissions as when the modal was opened.
        permissions = (trigger.payload.get("member") or {}).get("permissions") if trigger is not None else None
        it = await self._send_interaction(
            5, data, custom_id, user, permissions, channel_id or self.channel_id, None, "en-US", message=message
        )
        it.trigger = trigger
        return it

    @staticmethod
    def _modal_values(layout: list[dict[str, Any]], values: dict[str, str]) -> list[dict[str, Any]]:
        """Submitted components: each text input of the shown layout with its value, in layout order."""
        out: list[dict[str, Any]] = []
        for item in layout:
            if item.get("type") == 1:
                inputs = [c["custom_id"] for c in item.get("components") or [] if c.get("type") == 4]
                row = [{"type": 4, "custom_id": i, "value": values.pop(i, "")} for i in inputs]
                if row:
                    out.append({"type": 1, "components": row})
            elif item.get("type") == 18 and (inner := item.get("component") or {}).get("type") == 4:
                text_input = {"type": 4, "custom_id": inner["custom_id"], "value": values.pop(inner["custom_id"], "")}
                out.append({"type": 18, "component": text_input})
        # Values for inputs the layout does not name (or no modal shown): one action row each.
        out += [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in values.items()]
        return out

    # ------------------------------------------------------------------ test-facing: inspection

    def interaction_response(self, interaction: Interaction) -> InteractionSummary:
        """The bot's answer to an interaction: callback, @original reads/edits/deletes and followups in
        order, plus the current @original and followup messages."""
        token = interaction.token
        steps: list[Step] = []
        for rec in self.requests:
            if token not in rec.path:  # in-flight calls included (their `status` is still None)
                continue
            parts = rec.path.split("/")
            if rec.path.startswith("/interactions/"):
                kind = "callback"
            elif rec.path.endswith("/@original"):
                kind = {"GET": "get_original", "PATCH": "edit_original", "DELETE": "delete_original"}[rec.method]
            elif "/messages/" in rec.path:
                kind = {"GET": "get_followup", "PATCH": "edit_followup", "DELETE": "delete_followup"}[rec.method]
            elif len(parts) == 4 and rec.method == "POST":
                kind = "followup"
            else:
                kind = f"{rec.method.lower()}_webhook"
            steps.append(Step(kind, rec))
        original = self.messages.get(interaction.original_id) if interaction.original_id else None
        followups = [self.messages[i] for i in interaction.followup_ids if i in self.messages]
        return InteractionSummary(
            interaction, steps, interaction.callback_type, original, followups, copy.deepcopy(interaction.modal)
        )

    # ------------------------------------------------------------------ internals

    async def _send_interaction(
        self,
        type_: int,
        data: dict[str, Any],
        name: str,
        user: dict[str, Any] | None,
        permissions: int | str | None,
        channel_id: str,
        created_at: dt.datetime | None,
        locale: str,
        message: dict[str, Any] | None = None,
    ) -> Interaction:
        user = user or self.user
        channel = self.channels[channel_id]
        guild_id = channel.get("guild_id")
        created_at = created_at or _now()
        iid = self._ids.next(at=created_at)
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": iid,
            "application_id": self.application_id,
            "type": type_,
            "data": data,
            "token": token,
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "authorizing_integration_owners": {"0": guild_id} if guild_id else {"1": user["id"]},
            "context": 0 if guild_id else 1,
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
            "app_permissions": str(self.channel_permissions(self.bot_user["id"], channel_id)),
            "channel_id": channel_id,
            "channel": {**copy.deepcopy(channel), "permissions": None},
        }
        if guild_id:
            guild = self.guilds[guild_id]
            if user["id"] not in guild.members:
                self.add_member(user, guild_id=guild_id)
            perms = self._permissions(user["id"], guild_id) if permissions is None else int(permissions)
            if perms & P.ADMINISTRATOR:
                perms = P.ALL_PERMISSIONS  # Discord resolves Administrator to every permission
            member = copy.deepcopy(guild.members[user["id"]])
            member["permissions"] = str(perms)
            payload.update(
                guild_id=guild_id,
                guild_locale="en-US",
                guild={"id": guild_id, "locale": "en-US", "features": []},
                member=member,
            )
            payload["channel"]["permissions"] = str(perms)
        else:
            payload["user"] = user
            del payload["channel"]["permissions"]
        if message is not None:
            payload["message"] = copy.deepcopy(message)
        it = Interaction(iid, token, self.application_id, type_, name, guild_id, channel_id, user, created_at, payload)
        if message is not None:
            it.message_id = message["id"]
        self.interactions[token] = it
        self._dispatch("INTERACTION_CREATE", payload)
        await self.flush()
        return it

    def _interaction(self, token: str, *, app_id: str | None = None, interaction_id: str | None = None) -> Interaction:
        it = self.interactions.get(token)
        if interaction_id is not None:
            if it is None or it.id != interaction_id:
                raise ApiError(404, 10062, "Unknown interaction")
            return it
        if it is None or app_id != self.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        if self.enforce_deadlines and _now() - it.created_at > TOKEN_LIFETIME:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return it

    # ------------------------------------------------------------------ REST: callback, @original, followups

    async def _callback(self, c: Call) -> tuple[int, Any]:
        it = self._interaction(c.params["token"], interaction_id=c.params["interaction_id"])
        if self.enforce_deadlines and it.callback_type is None and _now() - it.created_at > CALLBACK_DEADLINE:
            raise ApiError(404, 10062, "Unknown interaction")
        if it.callback_type is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = c.json or {}
        type_ = body.get("type")
        allowed = {2: (4, 5, 9), 3: (4, 5, 6, 7, 9), 4: (8,), 5: (4, 5, 6, 7)}[it.type]
        if type_ not in allowed:
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {"type": {"_errors": [{"code": "BASE_TYPE_CHOICES", "message": f"Value must be one of {allowed}."}]}},
            )
        data = body.get("data") or {}
        it.callback_type = type_
        resource: dict[str, Any] | None = None
        info: dict[str, Any] = {"id": it.id, "type": it.type}
        if type_ in (4, 5):
            flags = (data.get("flags") or 0) & P.FLAG_EPHEMERAL
            if type_ == 5:
                msg = self._interaction_message(it, {}, [], flags=flags | P.FLAG_LOADING, allow_empty=True)
            else:
                msg = self._interaction_message(it, data, c.files, flags=flags)
                resource = {"type": 4, "message": msg}
            it.original_id = msg["id"]
            info.update(
                response_message_id=msg["id"],
                response_message_loading=type_ == 5,
                response_message_ephemeral=bool(flags),
            )
        elif type_ == 9:
            it.modal = copy.deepcopy(data)  # shown to the user; `submit_modal` answers it
        elif type_ in (6, 7):
            it.original_id = it.message_id
            if type_ == 7 and it.message_id:
                msg = self._edit(self.messages[it.message_id], data, c.files)
                resource = {"type": 7, "message": msg}
            info.update(
                response_message_id=it.message_id, response_message_loading=False, response_message_ephemeral=False
            )
        await self.flush()
        if not _truthy(c.query.get("with_response")):
            return 204, None
        out: dict[str, Any] = {"interaction": info}
        if resource is not None:
            out["resource"] = resource
        return 200, out

    def _interaction_message(
        self,
        it: Interaction,
        data: dict[str, Any],
        files: list[RecordedFile],
        *,
        flags: int,
        allow_empty: bool = False,
    ) -> dict[str, Any]:
        msg = self._build_message(
            it.channel_id,
            self.bot_user,
            data,
            files,
            type_=self._response_type(it),
            flags=flags,
            allow_empty=allow_empty,
        )
        msg["webhook_id"] = self.application_id
        msg["application_id"] = self.application_id
        msg["interaction_metadata"] = self._interaction_metadata(it)
        msg["interaction"] = {"id": it.id, "type": it.type, "name": it.name, "user": it.user}
        self._store_message(msg, echo=not flags & P.FLAG_EPHEMERAL)
        return msg

    @staticmethod
    def _response_type(it: Interaction) -> int:
        """The message type of an answer: CHAT_INPUT_COMMAND (20), CONTEXT_MENU_COMMAND (23) or DEFAULT."""
        if it.type != 2:
            return 0
        return 20 if it.payload["data"].get("type", CHAT_INPUT_COMMAND) == CHAT_INPUT_COMMAND else 23

    def _interaction_metadata(self, it: Interaction) -> dict[str, Any]:
        """A message's `interaction_metadata`: per interaction type, as Discord shapes it."""
        meta: dict[str, Any] = {
            "id": it.id,
            "type": it.type,
            "user": it.user,
            "authorizing_integration_owners": it.payload["authorizing_integration_owners"],
        }
        if it.type == 3 and it.message_id:
            meta["interacted_message_id"] = it.message_id
        if it.type == 2 and it.payload["data"].get("type") == MESSAGE_COMMAND:
            meta["target_message_id"] = it.payload["data"]["target_id"]
        if it.type == 5 and it.trigger is not None:
            meta["triggering_interaction_metadata"] = self._interaction_metadata(it.trigger)
        return meta

    def _original(self, c: Call) -> tuple[Interaction, dict[str, Any]]:
        it = self._interaction(c.params["token"], app_id=c.params["app"])
        msg = self.messages.get(it.original_id or "")
        if msg is None:
            raise ApiError(404, 10008, "Unknown Message")
        return it, msg

    async def _get_original(self, c: Call) -> tuple[int, Any]:
        return 200, self._original(c)[1]

    async def _edit_original(self, c: Call) -> tuple[int, Any]:
        _, msg = self._original(c)
        msg = self._edit(msg, c.json or {}, c.files)
        await self.flush()
        return 200, msg

    async def _delete_original(self, c: Call) -> tuple[int, Any]:
        _, msg = self._original(c)
        self._delete(msg)
        await self.flush()
        return 204, None

    def _followup_message(self, c: Call) -> dict[str, Any]:
        it = self._interaction(c.params["token"], app_id=c.params["app"])
        mid = c.params["message_id"]
        if mid not in it.followup_ids or mid not in self.messages:
            raise ApiError(404, 10008, "Unknown Message")
        return self.messages[mid]

    async def _get_followup(self, c: Call) -> tuple[int, Any]:
        return 200, self._followup_message(c)

    async def _edit_followup(self, c: Call) -> tuple[int, Any]:
        msg = self._edit(self._followup_message(c), c.json or {}, c.files)
        await self.flush()
        return 200, msg

    async def _delete_followup(self, c: Call) -> tuple[int, Any]:
        self._delete(self._followup_message(c))
        await self.flush()
        return 204, None

    async def _followup(self, c: Call) -> tuple[int, Any]:
        it = self._interaction(c.params["token"], app_id=c.params["app"])
        if it.callback_type is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        body = c.json or {}
        target = c.query.get("thread_id") or it.channel_id
        msg = self._build_message(
            target,
            self.bot_user,
            body,
            c.files,
            type_=self._response_type(it),
            flags=(body.get("flags") or 0) & P.FLAG_EPHEMERAL,
        )
        msg["webhook_id"] = self.application_id
        msg["application_id"] = self.application_id
        msg["interaction_metadata"] = self._interaction_metadata(it)
        self._store_message(msg, echo=not msg["flags"] & P.FLAG_EPHEMERAL)
        it.followup_ids.append(msg["id"])
        await self.flush()
        return (200, msg) if _truthy(c.query.get("wait")) else (204, None)
