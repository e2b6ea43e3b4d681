"""Input caps and history trimming, checked before any model runs."""

from __future__ import annotations

import pytest

from bot.answering import AnswerService, UserError, trim_history
from bot.keybox import KeyBox
from bot.settings import Settings
from bot.storage import GuildConfig
from inference.types import Attachment, ChatMessage


@pytest.fixture
def service() -> AnswerService:
    settings = Settings(_env_file=None, max_prompt_chars=100, max_attachments=2, max_attachment_bytes=1000)  # type: ignore[call-arg]
    return AnswerService(board=None, store=None, settings=settings, keybox=KeyBox(b"k" * 32))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prompt", "attachments", "message"),
    [
        ("   ", [], "empty"),
        ("x" * 101, [], "101 characters; the limit here is 100"),
        ("hi", [Attachment("a.png", "image/png", 10)] * 3, "At most 2 attachments"),
        ("hi", [Attachment("big.png", "image/png", 5000)], "`big.png` is too large"),
        ("hi", [Attachment("x.exe", "application/x-msdownload", 10)], "unsupported type (application/x-msdownload)"),
        ("hi", [Attachment("x.bin", "", 10)], "unsupported type (unknown)"),
    ],
)
def test_bad_input_gets_a_clear_message(service, prompt, attachments, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        service.validate(prompt, attachments, GuildConfig())


def test_server_limit_tighter_than_operator_limit(service):
    with pytest.raises(UserError, match="limit here is 10"):
        service.validate("x" * 11, [], GuildConfig(max_prompt_chars=10))


def test_valid_input_becomes_a_request(service):
    request = service.validate("  what is this?  ", [Attachment("cat.jpg", "image/jpeg", 10)], GuildConfig())
    assert request.text == "what is this?" and request.attachments[0].is_media


def count(text: str) -> int:
    return len(text.split())


def test_trim_drops_oldest_turns_and_keeps_the_system_prompt():
    system = ChatMessage("system", "be nice")  # 2 tokens
    history = [ChatMessage("user", f"old {i} a b c") for i in range(10)]  # 5 tokens each
    prompt = ChatMessage("user", "new question")  # 2 tokens
    messages, dropped = trim_history(system, history, prompt, budget=2 + 2 + 15, count=count)
    assert messages[0] == system and messages[-1] == prompt
    assert messages[1:-1] == history[-3:] and dropped == 7


def test_no_trim_when_it_fits():
    messages, dropped = trim_history(
        ChatMessage("system", "s"), [ChatMessage("user", "a")], ChatMessage("user", "b"), budget=100, count=count
    )
    assert len(messages) == 3 and dropped == 0
