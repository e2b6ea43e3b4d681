"""Channel permissions as Discord computes them: roles, then the channel's overwrites.

https://discord.com/developers/docs/topics/permissions#permission-overwrites: base permissions from
@everyone and the member's roles (the owner and Administrator get everything), then the channel's
@everyone overwrite, the member's roles' overwrites together, and the member's own overwrite, each
denying before allowing. A thread uses its parent's overwrites. Without View Channel nothing is left.
"""

from __future__ import annotations

from typing import Any

from . import payloads as P

ROLE_OVERWRITE, MEMBER_OVERWRITE = 0, 1

#: Names Discord's client shows, for readable test failures.
NAMES = {
    P.VIEW_CHANNEL: "View Channel",
    P.SEND_MESSAGES: "Send Messages",
    P.READ_MESSAGE_HISTORY: "Read Message History",
    P.CREATE_PUBLIC_THREADS: "Create Public Threads",
    P.SEND_MESSAGES_IN_THREADS: "Send Messages in Threads",
    P.MANAGE_THREADS: "Manage Threads",
    P.MANAGE_MESSAGES: "Manage Messages",
    P.SEND_POLLS: "Send Polls",
}


def base_permissions(
    roles: dict[str, dict[str, Any]], guild_id: str, owner_id: str, user_id: str, member_roles: list[str]
) -> int:
    if user_id == owner_id:
        return P.ALL_PERMISSIONS
    perms = int(roles[guild_id]["permissions"])
    for role_id in member_roles:
        perms |= int(roles[role_id]["permissions"])
    return P.ALL_PERMISSIONS if perms & P.ADMINISTRATOR else perms


def apply_overwrites(
    base: int, overwrites: list[dict[str, Any]], guild_id: str, user_id: str, member_roles: list[str]
) -> int:
    if base & P.ADMINISTRATOR:
        return P.ALL_PERMISSIONS
    by_id = {o["id"]: o for o in overwrites}
    perms = base
    if (everyone := by_id.get(guild_id)) is not None:
        perms = (perms & ~int(everyone["deny"])) | int(everyone["allow"])
    deny = allow = 0
    for role_id in member_roles:
        if (o := by_id.get(role_id)) is not None and o["type"] == ROLE_OVERWRITE:
            deny |= int(o["deny"])
            allow |= int(o["allow"])
    perms = (perms & ~deny) | allow
    if (own := by_id.get(user_id)) is not None and own["type"] == MEMBER_OVERWRITE:
        perms = (perms & ~int(own["deny"])) | int(own["allow"])
    return perms if perms & P.VIEW_CHANNEL else 0


def set_overwrite(channel: dict[str, Any], target_id: str, type_: int, *, allow: int = 0, deny: int = 0) -> None:
    """Add to (or create) the channel's overwrite for a role or member; a bit allowed is no longer denied."""
    overwrites: list[dict[str, Any]] = channel.setdefault("permission_overwrites", [])
    found = next((o for o in overwrites if o["id"] == target_id), None)
    if found is None:
        found = {"id": target_id, "type": type_, "allow": "0", "deny": "0"}
        overwrites.append(found)
    found["allow"] = str((int(found["allow"]) | allow) & ~deny)
    found["deny"] = str((int(found["deny"]) | deny) & ~allow)
