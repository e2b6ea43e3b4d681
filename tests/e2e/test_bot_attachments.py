"""Attachments through the real bot: read after their checks (the fake CDN records each download), the text in
the prompt, images to a model that sees them or a note that none is configured."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from inference.catalogue import Catalogue
from tests.e2e import bot_harness
from tests.e2e.bot_harness import FOOTER_RE, Harness
from tests.e2e.test_bot_chat import replying_to, start_chat
from tests.e2e.test_bot_limits import refused_privately

TEXT = "text/plain; charset=utf-8"


def png(width: int = 1600, height: int = 800) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "blue").save(out, format="PNG")
    return out.getvalue()


async def test_ask_with_a_text_file_puts_its_content_in_the_prompt(switchboard: Harness) -> None:
    fake = switchboard.fake
    notes = fake.make_attachment("notes.txt", b"The launch password is PURPLE-42.\n", content_type=TEXT)
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "what is the launch password?", "file": notes})
        summary = await switchboard.wait_answered(it)
    assert FOOTER_RE.search(summary.content) and summary.content.startswith("answer from small-fake")
    (messages,) = switchboard.small.calls
    question = messages[-1].content
    assert "File `notes.txt`:\n```\nThe launch password is PURPLE-42.\n```" in question
    assert question.endswith("what is the launch password?")
    assert len(fake.cdn_reads) == 1 and fake.cdn_reads[0].endswith("/notes.txt")


async def test_a_mention_with_several_files_reads_them_all(switchboard: Harness) -> None:
    fake = switchboard.fake
    files = [
        fake.make_attachment("a.csv", b"name,score\nada,3\n", content_type="text/csv"),
        fake.make_attachment("b.json", b'{"winner": "ada"}', content_type="application/json"),
    ]
    async with switchboard.running():
        asked = await fake.send_message(f"{fake.mention(fake.bot_user)} who won?", attachments=files)
        answered = await fake.wait_for_message(None, replying_to(asked))
    assert FOOTER_RE.search(answered["content"])
    question = switchboard.small.calls[0][-1].content
    assert "name,score\nada,3" in question and '{"winner": "ada"}' in question and question.endswith("who won?")
    assert [p.rsplit("/", 1)[1] for p in fake.cdn_reads] == ["a.csv", "b.json"]


async def test_a_file_in_a_chat_thread_is_read(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        thread = await start_chat(fake)
        todo = fake.make_attachment(
            "todo.md", b"- buy milk\n- call mum\n", content_type="text/markdown", channel_id=thread
        )
        asked = await fake.send_message("what is on my list?", channel_id=thread, attachments=[todo])
        await fake.wait_for_message(thread, replying_to(asked))
    question = switchboard.small.calls[-1][-1].content
    assert "- buy milk\n- call mum" in question and question.endswith("what is on my list?")


async def test_oversized_and_wrong_type_files_are_refused_before_any_download(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.settings_overrides = {"max_attachment_bytes": 1024}
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"prompt": "read this", "file": fake.make_attachment("big.log", b"x" * 4096, content_type=TEXT)},
            "`big.log` is too large (4 KB); attachments may be at most 1 KB.",
        ),
        (
            {
                "prompt": "read this",
                "file": fake.make_attachment("guide.pdf", b"%PDF-1.7", content_type="application/pdf"),
            },
            "I can't read `guide.pdf` (application/pdf): attach text files (.txt, .md, code, .json, .csv, .log) "
            "or images (PNG, JPEG, GIF, WebP).",
        ),
    ]
    async with switchboard.running():
        assert switchboard.store is not None
        await switchboard.store.update_guild_config(int(fake.guild_id), 1, "test", rate_limit_burst=10)
        for options, message in cases:
            it = await fake.send_interaction("ask", options)
            refused_privately(await fake.wait_for_response(it, lambda s: s.followups), message)
        # A mention with a good file and a bad one: neither is downloaded.
        good = fake.make_attachment("ok.txt", b"fine", content_type=TEXT)
        bad = fake.make_attachment("scan.tiff", b"II*\x00", content_type="image/tiff")
        await fake.send_message(f"{fake.mention(fake.bot_user)} compare these", attachments=[good, bad])
        edited = await fake.wait_for_message(None, lambda m: "scan.tiff" in m["content"])
        assert edited["content"].startswith("I can't read `scan.tiff` (image/tiff)")
    assert fake.cdn_reads == [] and switchboard.model_calls() == 0


async def test_binary_content_claiming_to_be_text_is_refused(switchboard: Harness) -> None:
    fake = switchboard.fake
    fake_text = fake.make_attachment("notes.txt", b"MZ\x90\x00\x03\x00\x00\x00" * 8, content_type=TEXT)
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "summarise", "file": fake_text})
        refused_privately(
            await fake.wait_for_response(it, lambda s: s.followups),
            "`notes.txt` isn't text: it looks like a binary file.",
        )
    assert switchboard.model_calls() == 0


async def test_an_image_without_an_image_model_says_so_and_still_answers_the_text(switchboard: Harness) -> None:
    fake = switchboard.fake
    photo = fake.make_attachment("sky.png", png(), content_type="image/png")
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "why is the sky blue?", "task": "multimodal", "file": photo})
        summary = await switchboard.wait_answered(it)
    footer = FOOTER_RE.search(summary.content)
    assert footer is not None and footer["task"] == "chat" and footer["model"] == "small-fake"
    assert "no image model is configured, so sky.png was not seen" in summary.content
    assert summary.content.startswith("answer from small-fake")
    (messages,) = switchboard.small.calls
    assert messages[-1].content == "why is the sky blue?" and all(not m.images for m in messages)


async def test_only_an_image_without_an_image_model_runs_no_model(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        asked = await fake.send_message(
            fake.mention(fake.bot_user),
            attachments=[fake.make_attachment("cat.png", png(8, 8), content_type="image/png")],
        )
        answered = await fake.wait_for_message(None, replying_to(asked))
    assert answered["content"].startswith("I can't answer this: no image model is configured, so cat.png was not seen.")
    assert switchboard.model_calls() == 0


@pytest.fixture
def vision_catalogue(monkeypatch: pytest.MonkeyPatch) -> None:
    """The harness's catalogue with its large model able to see images (``modalities: [text, image]``)."""
    original = bot_harness.fake_catalogue

    def with_vision(**kw: Any) -> Catalogue:
        catalogue = original(**kw)
        models = dict(catalogue.models)
        models[bot_harness.LARGE] = models[bot_harness.LARGE].model_copy(update={"modalities": ("text", "image")})
        return Catalogue(models=models)

    monkeypatch.setattr(bot_harness, "fake_catalogue", with_vision)


@pytest.mark.usefixtures("vision_catalogue")
async def test_an_image_goes_resized_to_the_model_that_can_see(switchboard: Harness) -> None:
    fake = switchboard.fake
    photo = fake.make_attachment("sky.png", png(), content_type="image/png")
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "what colour is this?", "file": photo})
        summary = await switchboard.wait_answered(it)
    footer = FOOTER_RE.search(summary.content)
    assert footer is not None and footer["model"] == "large-fake" and footer["tier"] == "large"
    assert switchboard.small.calls == []
    (messages,) = switchboard.large.calls
    (image,) = messages[-1].images
    assert messages[-1].content == "what colour is this?" and image.filename == "sky.png"
    assert Image.open(io.BytesIO(image.data)).size == (1024, 512)


async def test_audio_is_not_supported_yet_and_never_downloaded(switchboard: Harness) -> None:
    fake = switchboard.fake
    song = fake.make_attachment("song.mp3", b"ID3\x03\x00", content_type="audio/mpeg")
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "what genre is this?", "file": song})
        summary = await switchboard.wait_answered(it)
    assert "audio and video are not supported yet (song.mp3 not read)" in summary.content
    assert summary.content.startswith("answer from small-fake") and fake.cdn_reads == []
