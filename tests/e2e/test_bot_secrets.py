"""The token is a secret: it appears in no log line (DEBUG included), no repr, no validation error."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from bot.settings import Settings
from tests.e2e.bot_harness import Harness

SENTINEL = "sentinel-token-Zx81"


def test_settings_never_show_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", SENTINEL)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.discord_token is not None and settings.discord_token.get_secret_value() == SENTINEL
    assert SENTINEL not in repr(settings) and SENTINEL not in str(settings)
    assert SENTINEL not in settings.model_dump_json()
    monkeypatch.setenv("SWITCHBOARD_MAX_PROMPT_CHARS", "lots")
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None)  # type: ignore[call-arg]
    assert SENTINEL not in str(info.value)


async def test_no_log_record_carries_the_token(switchboard: Harness, caplog: pytest.LogCaptureFixture) -> None:
    fake = switchboard.fake
    caplog.set_level(logging.DEBUG)  # every logger, discord.py's gateway and HTTP included
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "hello"})
        await switchboard.wait_answered(it)
    assert caplog.records, "logging was captured"
    token = fake.token
    leaked = [r.getMessage() for r in caplog.records if token in r.getMessage()]
    assert leaked == []
