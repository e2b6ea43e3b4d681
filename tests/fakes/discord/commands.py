"""Application commands: the REST routes discord.py's `tree.sync()` uses (global and guild scope), and
building the `options`/`resolved` of an invoked command from the synced definition."""

from __future__ import annotations

from typing import Any

from . import payloads as P
from .core import Call, Core
from .records import ApiError

# Option types of application commands.
OPT_SUB, OPT_GROUP, OPT_STRING, OPT_INTEGER, OPT_BOOLEAN = 1, 2, 3, 4, 5
OPT_USER, OPT_CHANNEL, OPT_ROLE, OPT_MENTIONABLE, OPT_NUMBER, OPT_ATTACHMENT = 6, 7, 8, 9, 10, 11


class CommandsMixin(Core):
    """Application command sync and option building."""

    # ------------------------------------------------------------------ REST: application commands

    def _command_scope(self, c: Call) -> str:
        if c.params["app"] != self.application_id:
            raise ApiError(403, 50001, "Missing Access")
        guild_id = c.params.get("guild_id")
        if guild_id is not None and guild_id not in self.guilds:
            raise ApiError(403, 50001, "Missing Access")
        return guild_id or "global"

    def _command(self, scope: str, body: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        perms = body.get("default_member_permissions")
        cmd: dict[str, Any] = {
            "id": old["id"] if old else self._ids.next(),
            "application_id": self.application_id,
            "version": self._ids.next(),
            # discord.py sends an integer; Discord answers with a string (as the response schema says).
            "default_member_permissions": None if perms is None else str(perms),
            "type": body.get("type") or 1,
            "name": body["name"],
            "name_localizations": body.get("name_localizations"),
            "description": body.get("description") or "",
            "description_localizations": body.get("description_localizations"),
            "nsfw": bool(body.get("nsfw", False)),
            "integration_types": body.get("integration_types") or [0],
            "contexts": body.get("contexts"),
        }
        if body.get("options"):
            cmd["options"] = body["options"]
        if scope == "global":
            cmd["dm_permission"] = body.get("dm_permission") if body.get("dm_permission") is not None else True
        else:
            cmd["guild_id"] = scope
        return cmd

    async def _get_commands(self, c: Call) -> tuple[int, Any]:
        return 200, list(self.commands.get(self._command_scope(c), {}).values())

    async def _put_commands(self, c: Call) -> tuple[int, Any]:
        scope = self._command_scope(c)
        old = self.commands.get(scope, {})
        new: dict[str, dict[str, Any]] = {}
        for body in c.json or []:
            new[body["name"]] = self._command(scope, body, old.get(body["name"]))
        self.commands[scope] = new
        return 200, list(new.values())

    async def _post_command(self, c: Call) -> tuple[int, Any]:
        scope = self._command_scope(c)
        cmds = self.commands.setdefault(scope, {})
        old = cmds.get(c.json["name"])
        cmds[c.json["name"]] = self._command(scope, c.json, old)
        return (200 if old else 201), cmds[c.json["name"]]

    def _command_by_id(self, scope: str, command_id: str) -> dict[str, Any]:
        for cmd in self.commands.get(scope, {}).values():
            if cmd["id"] == command_id:
                return cmd
        raise ApiError(404, 10063, "Unknown application command")

    async def _get_command(self, c: Call) -> tuple[int, Any]:
        return 200, self._command_by_id(self._command_scope(c), c.params["command_id"])

    async def _patch_command(self, c: Call) -> tuple[int, Any]:
        scope = self._command_scope(c)
        cmd = self._command_by_id(scope, c.params["command_id"])
        body = {**cmd, **c.json}
        del self.commands[scope][cmd["name"]]
        self.commands[scope][body["name"]] = self._command(scope, body, cmd)
        return 200, self.commands[scope][body["name"]]

    async def _delete_command(self, c: Call) -> tuple[int, Any]:
        scope = self._command_scope(c)
        cmd = self._command_by_id(scope, c.params["command_id"])
        del self.commands[scope][cmd["name"]]
        return 204, None

    # ------------------------------------------------------------------ options of invoked commands

    def _find_command(self, name: str, guild_id: str | None) -> tuple[dict[str, Any] | None, str]:
        if guild_id and name in self.commands.get(guild_id, {}):
            return self.commands[guild_id][name], guild_id
        if name in self.commands["global"]:
            return self.commands["global"][name], "global"
        # Not synced: discord.py still finds a guild or global command through fallback_to_global.
        return None, guild_id or "global"

    def _build_options(
        self,
        command: dict[str, Any] | None,
        path: list[str],
        values: dict[str, Any],
        channel_id: str,
        focused: str | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        defs = (command.get("options") or []) if command else []
        for sub in path:
            match = next((o for o in defs if o["name"] == sub and o["type"] in (OPT_SUB, OPT_GROUP)), None)
            if command and match is None:
                raise ValueError(f"/{command['name']} has no subcommand {sub!r}")
            defs = (match or {}).get("options") or []
        by_name = {o["name"]: o for o in defs}
        if command:
            unknown = set(values) - set(by_name)
            missing = [o["name"] for o in defs if o.get("required") and o["name"] not in values]
            if unknown or (missing and focused is None):
                raise ValueError(f"options do not match the synced command: unknown {unknown}, missing {missing}")
        resolved: dict[str, dict[str, Any]] = {}
        leaf: list[dict[str, Any]] = []
        for opt_name, value in values.items():
            type_ = by_name[opt_name]["type"] if opt_name in by_name else self._infer_type(value)
            leaf.append(self._option(opt_name, type_, value, resolved, channel_id))
            if opt_name == focused:
                leaf[-1]["focused"] = True
                leaf[-1]["value"] = str(value)
        options = leaf
        for depth, sub in reversed(list(enumerate(path))):
            type_ = OPT_GROUP if depth == 0 and len(path) == 2 else OPT_SUB
            options = [{"name": sub, "type": type_, "options": options}]
        return options, resolved

    @staticmethod
    def _infer_type(value: Any) -> int:
        if isinstance(value, bool):
            return OPT_BOOLEAN
        if isinstance(value, int):
            return OPT_INTEGER
        if isinstance(value, float):
            return OPT_NUMBER
        if isinstance(value, tuple) or (isinstance(value, dict) and "filename" in value):
            return OPT_ATTACHMENT
        if isinstance(value, dict) and "username" in value:
            return OPT_USER
        return OPT_STRING

    def _option(
        self, name: str, type_: int, value: Any, resolved: dict[str, dict[str, Any]], channel_id: str
    ) -> dict[str, Any]:
        guild_id = self.channels[channel_id].get("guild_id")
        if type_ == OPT_ATTACHMENT:
            att = self.make_attachment(*value, channel_id=channel_id) if isinstance(value, tuple) else value
            resolved.setdefault("attachments", {})[att["id"]] = att
            value = att["id"]
        elif type_ == OPT_USER or (type_ == OPT_MENTIONABLE and not self._is_role(value, guild_id)):
            user = value if isinstance(value, dict) else self.users[str(value)]
            resolved.setdefault("users", {})[user["id"]] = user
            if guild_id and user["id"] in self.guilds[guild_id].members:
                member = {k: v for k, v in self.guilds[guild_id].members[user["id"]].items() if k != "user"}
                member["permissions"] = str(self._permissions(user["id"], guild_id))
                resolved.setdefault("members", {})[user["id"]] = member
            value = user["id"]
        elif type_ in (OPT_ROLE, OPT_MENTIONABLE):
            role_id = value["id"] if isinstance(value, dict) else str(value)
            resolved.setdefault("roles", {})[role_id] = self.guilds[guild_id or self.guild_id].roles[role_id]
            value = role_id
        elif type_ == OPT_CHANNEL:
            cid = value["id"] if isinstance(value, dict) else str(value)
            ch = self.channels[cid]
            keep: tuple[str, ...] = ("id", "name", "type", "parent_id", "thread_metadata")
            if ch["type"] in P.THREAD_TYPES:  # a thread comes resolved with its thread fields, as on Discord
                keep += ("guild_id", "owner_id", "last_message_id", "message_count", "member_count", "flags")
            resolved.setdefault("channels", {})[cid] = {
                **{k: ch[k] for k in keep if k in ch},
                "permissions": str(P.ALL_PERMISSIONS),
            }
            value = cid
        elif type_ == OPT_INTEGER:
            value = int(value)
        elif type_ == OPT_NUMBER:
            value = float(value)
        elif type_ == OPT_BOOLEAN:
            value = bool(value)
        else:
            value = str(value)
        return {"name": name, "type": type_, "value": value}

    def _is_role(self, value: Any, guild_id: str | None) -> bool:
        role_id = value["id"] if isinstance(value, dict) else str(value)
        return bool(guild_id) and role_id in self.guilds[guild_id or ""].roles
