"""A fake Discord (gateway + REST) on 127.0.0.1 that the unmodified discord.py client talks to.

Start it, point discord.py at it (tests/e2e/conftest.py does this), run a bot, then drive it from the
test: `send_interaction`, `send_message`, `archive_thread`, ... and look at `requests`,
`interaction_response`, `messages_in`. Every JSON body in both directions is validated against
Discord's OpenAPI spec; problems are collected in `violations`, `unhandled` and `errors`.

`FakeDiscord` is assembled here from one mixin per resource; this module holds only the REST route
table (`_register_routes`). Where things live:

- core.py          the state (`__init__`: every attribute), lifecycle (`start`, `close`, `url`), the
                   aiohttp app, REST dispatch (`_rest`, route matching, auth), recording (`requests`,
                   `problems`), waiting (`wait_for`, `sync`, `wait_for_request`, `wait_for_response`,
                   `wait_for_message`, `flush`)
- guilds.py        guilds, members, roles, users (`add_guild`, `add_member`, `add_role`, `add_channel`),
                   permissions (`deny`, `allow`, `channel_permissions`), DMs (`dm_channel`, `close_dms`),
                   REST for users, the application and guilds
- messages.py      channels and messages (`send_message`, `send_system_message`, `messages_in`), REST for
                   channels, messages, reactions and typing, attachments/CDN (`make_attachment`)
- threads.py       threads (`create_thread`, `archive_thread`, `auto_archive`), thread members
- interactions.py  `send_interaction`, `send_context_menu`, `send_autocomplete`, `send_component`,
                   `submit_modal`, callbacks, @original, followups, `interaction_response`
- commands.py      application command sync (REST) and option building for invoked commands
- ratelimits.py    `rate_limit` (scripted 429s) and X-RateLimit-* bucket headers
- sessions.py      the gateway websocket handler (IDENTIFY, RESUME, heartbeats), event dispatch,
                   `request_reconnect`, `invalidate_session`
- gateway.py       gateway opcodes, intents and frame encoding (`GatewaySession`)
- payloads.py      object builders and permission bits; permissions.py: permission arithmetic;
                   records.py: the recorded requests/interactions; openapi.py: the spec validator
"""

from __future__ import annotations

from .commands import CommandsMixin
from .guilds import GuildsMixin
from .interactions import InteractionsMixin
from .messages import MessagesMixin
from .ratelimits import RateLimitsMixin
from .sessions import SessionsMixin
from .threads import ThreadsMixin


class FakeDiscord(
    GuildsMixin,
    MessagesMixin,
    ThreadsMixin,
    InteractionsMixin,
    CommandsMixin,
    RateLimitsMixin,
    SessionsMixin,
):
    """The fake server and its world: one guild (`guild_id`) with a text channel (`channel_id`), the bot
    (`bot_user`, a member with its own role) and a human member (`user`)."""

    # ------------------------------------------------------------------ route table (first match wins)

    def _register_routes(self) -> None:
        r = self._route
        r("GET", "/gateway", self._get_gateway)
        r("GET", "/gateway/bot", self._get_gateway_bot)
        r("GET", "/users/@me", self._get_me)
        r("POST", "/users/@me/channels", self._create_dm)
        r("GET", "/users/{user_id}", self._get_user)
        r("GET", "/oauth2/applications/@me", self._get_application)
        r("GET", "/applications/@me", self._get_application)
        for prefix in ("/applications/{app}", "/applications/{app}/guilds/{guild_id}"):
            r("GET", f"{prefix}/commands", self._get_commands)
            r("PUT", f"{prefix}/commands", self._put_commands)
            r("POST", f"{prefix}/commands", self._post_command)
            r("GET", f"{prefix}/commands/{{command_id}}", self._get_command)
            r("PATCH", f"{prefix}/commands/{{command_id}}", self._patch_command)
            r("DELETE", f"{prefix}/commands/{{command_id}}", self._delete_command)
        r("POST", "/interactions/{interaction_id}/{token}/callback", self._callback)
        r("GET", "/webhooks/{app}/{token}/messages/@original", self._get_original)
        r("PATCH", "/webhooks/{app}/{token}/messages/@original", self._edit_original)
        r("DELETE", "/webhooks/{app}/{token}/messages/@original", self._delete_original)
        r("GET", "/webhooks/{app}/{token}/messages/{message_id}", self._get_followup)
        r("PATCH", "/webhooks/{app}/{token}/messages/{message_id}", self._edit_followup)
        r("DELETE", "/webhooks/{app}/{token}/messages/{message_id}", self._delete_followup)
        r("POST", "/webhooks/{app}/{token}", self._followup)
        r("GET", "/channels/{channel_id}", self._get_channel)
        r("PATCH", "/channels/{channel_id}", self._patch_channel)
        r("DELETE", "/channels/{channel_id}", self._delete_channel)
        r("GET", "/channels/{channel_id}/messages/pins", self._get_pins)
        r("GET", "/channels/{channel_id}/messages", self._get_messages)
        r("POST", "/channels/{channel_id}/messages", self._post_message)
        r("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message)
        r("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message)
        r("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._thread_from_message)
        r("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._add_reaction)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._remove_reaction)
        r("POST", "/channels/{channel_id}/threads", self._thread_without_message)
        r("POST", "/channels/{channel_id}/typing", self._typing)
        r("PUT", "/channels/{channel_id}/thread-members/{user_id}", self._add_thread_member)
        r("DELETE", "/channels/{channel_id}/thread-members/{user_id}", self._remove_thread_member)
        r("GET", "/guilds/{guild_id}", self._get_guild)
        r("GET", "/guilds/{guild_id}/channels", self._get_guild_channels)
        r("GET", "/guilds/{guild_id}/roles", self._get_roles)
        r("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member)
        r("GET", "/guilds/{guild_id}/threads/active", self._get_active_threads)
