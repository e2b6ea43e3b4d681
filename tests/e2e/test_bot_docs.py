"""/docs through the real bot and the fake Discord: a server's own knowledge base, cited answers, message sources
kept in sync through edit and delete events, Discord's permissions checked at question time, isolation between
servers, admin-only subcommands and clear refusals for bad input."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest

from inference.errors import BackendUnavailable
from tests.e2e.bot_harness import Harness
from tests.fakes.discord import FakeDiscord, InteractionSummary
from tests.fakes.discord import payloads as P

MANAGE_SERVER = str(P.MANAGE_GUILD)
REFUSAL = "You need the **Manage Server** permission to use this command."
RULES = (
    b"# Club rules\n\n## Meetings\n\nMeetings are on Thursdays at 18:00 in room B12.\n\n"
    b"## Dues\n\nDues are 5 euros a month, paid to the treasurer.\n"
)


@pytest.fixture
def docs(switchboard: Harness) -> Harness:
    switchboard.with_knowledge = True
    return switchboard


def last_message(s: InteractionSummary) -> str:
    if s.followups:
        return str(s.followups[-1]["content"])
    return s.content


def answered(s: InteractionSummary) -> bool:
    text = last_message(s)
    return any(line.startswith("-# rag") for line in text.split("\n")) or text.startswith("⚠️")


async def admin(
    fake: FakeDiscord,
    sub: str,
    options: dict[str, Any] | None = None,
    *,
    permissions: str | None = MANAGE_SERVER,
    channel_id: str | None = None,
    until: Callable[[InteractionSummary], bool] | None = None,
) -> InteractionSummary:
    """Run an admin subcommand and wait until its answer is final (not a progress or "reading" message)."""
    it = await fake.send_interaction(
        "docs", options or {}, subcommand=sub, permissions=permissions, channel_id=channel_id
    )

    def done(s: InteractionSummary) -> bool:
        if until is not None:
            return until(s)
        return s.original is not None and not s.loading and not s.content.startswith("⏳")

    return await fake.wait_for_response(it, done, timeout=30)


async def ask(
    fake: FakeDiscord, question: str, *, user: dict[str, Any] | None = None, channel_id: str | None = None
) -> str:
    it = await fake.send_interaction("docs", {"question": question}, subcommand="ask", user=user, channel_id=channel_id)
    summary = await fake.wait_for_response(it, answered, timeout=30)
    return "\n".join([summary.content, *(str(f["content"]) for f in summary.followups)])


def watch_sync(switchboard: Harness) -> list[str]:
    """Record (and wake the fake's waiters on) each sync the listeners finish."""
    service = switchboard.bot.knowledge if switchboard.bot else None
    assert service is not None
    calls: list[str] = []
    for name in ("message_edited", "messages_deleted", "message_created", "add_messages"):
        original = getattr(service, name)

        def make(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                result = await original(*args, **kwargs)
                calls.append(name)
                switchboard.fake.notify()
                return result

            return wrapper

        setattr(service, name, make(name, original))
    return calls


async def test_add_a_file_then_ask_gets_a_cited_answer(docs: Harness) -> None:
    fake = docs.fake
    async with docs.running():
        added = await admin(fake, "add", {"file": ("rules.md", RULES)})
        assert added.ephemeral
        assert "Indexed `rules.md`" in added.content
        listed = await admin(fake, "list")
        assert "`rules.md` (file)" in listed.content and f"<@{fake.user['id']}>" in listed.content
        text = await ask(fake, "When are the meetings held?")
    assert "answer from" in text  # the scripted model answered
    assert "`rules.md`" in text and "B12" in text  # cited and quoted
    assert "Meetings" in text  # the position names the section
    assert "This question may draw on" not in text  # the asker is no admin here


async def test_progress_is_shown_while_a_large_file_is_indexed(docs: Harness) -> None:
    fake = docs.fake
    big = "\n\n".join(f"## Part {n}\n\n" + f"Paragraph {n} says something about topic {n}. " * 3 for n in range(100))
    async with docs.running():
        added = await admin(fake, "add", {"file": ("big.md", big.encode())})
    edits = [str((s.request.json or {}).get("content")) for s in added.steps if s.request.method == "PATCH"]
    counts = [re.search(r"indexed (\d+)/(\d+) chunks", e) for e in edits]
    progress = [(int(m[1]), int(m[2])) for m in counts if m]
    total = progress[-1][1]
    assert total > 64 and progress[-1] == (total, total)  # several embedding batches, the last one complete
    assert any(done < total for done, _ in progress)  # shown while it was still going
    assert f"Indexed `big.md`: {total} chunks" in added.content


async def test_nothing_relevant_says_so_without_a_model(docs: Harness) -> None:
    fake = docs.fake
    async with docs.running():
        await admin(fake, "add", {"file": ("rules.md", RULES)})
        calls = docs.model_calls()
        text = await ask(fake, "What is the airspeed velocity of an unladen swallow in Mongolia?")
        assert docs.model_calls() == calls
    assert "no model was run" in text


async def test_a_channel_is_kept_in_sync_through_edits_and_deletes(docs: Harness) -> None:
    fake = docs.fake
    faq = fake.add_channel("faq")
    async with docs.running():
        first = await fake.send_message("The wifi password is Purple-Otter-77.", channel_id=faq)
        await fake.send_message("Parking is behind the building, level -2.", channel_id=faq)
        added = await admin(fake, "add", {"channel": faq})
        assert "Indexed `channel:" in added.content
        sync = watch_sync(docs)
        text = await ask(fake, "What is the wifi password?")
        assert "Purple-Otter-77" in text and first["id"] in text  # quoted, with a jump link to the message

        await fake.edit_message_as_user(first, "The wifi password is Green-Heron-12.")
        await fake.wait_for(lambda: "message_edited" in sync)
        text = await ask(fake, "What is the wifi password?")
        assert "Green-Heron-12" in text and "Purple-Otter-77" not in text

        new = await fake.send_message("The printer is on floor 3, code Zebra-4.", channel_id=faq)
        await fake.wait_for(lambda: "message_created" in sync)
        text = await ask(fake, "Where is the printer?")
        assert "Zebra-4" in text and new["id"] in text

        await fake.delete_message_as_user(first)
        await fake.wait_for(lambda: "messages_deleted" in sync)
        text = await ask(fake, "What is the wifi password?")
        assert "Green-Heron-12" not in text and "Purple-Otter-77" not in text

        # A moderator's purge (one bulk delete event) removes every purged message.
        await fake.bulk_delete([new, *[m for m in fake.messages_in(faq) if "Parking" in m["content"]]])
        await fake.wait_for(lambda: sync.count("messages_deleted") == 2)
        assert docs.bot is not None and docs.bot.knowledge is not None
        hits = await docs.bot.knowledge.kb.search(int(fake.guild_id), "printer parking", can_read=lambda c: True)
        assert hits == []


async def test_pins_and_a_message_link_are_indexed(docs: Harness) -> None:
    fake = docs.fake
    rules = fake.add_channel("rules")
    async with docs.running():
        pinned = await fake.send_message("Rule 7: no spoilers outside #spoilers.", channel_id=rules)
        await fake.send_message("Unpinned chatter about lunch.", channel_id=rules)
        await fake.pin(pinned)
        added = await admin(fake, "add", {"channel": rules, "pins_only": True})
        assert "Indexed `pins:" in added.content and "1 chunk" in added.content
        msg = await fake.send_message("Office hours are 9 to 5 on weekdays.")
        link = f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}/{msg['id']}"
        added = await admin(fake, "add", {"link": link})
        assert f"Indexed `message:{fake.channel_id}/{msg['id']}`" in added.content
        text = await ask(fake, "What does rule 7 say?")
        assert "Rule 7" in text and "lunch" not in text
        text = await ask(fake, "When are office hours?")
        assert "9 to 5" in text

        # Pinning and unpinning re-read the pins (CHANNEL_PINS_UPDATE).
        sync = watch_sync(docs)
        rule8 = await fake.send_message("Rule 8: bring your own mug.", channel_id=rules)
        await fake.pin(rule8)
        await fake.wait_for(lambda: sync.count("add_messages") == 1)
        text = await ask(fake, "What does rule 8 say about mugs?")
        assert "bring your own mug" in text
        await fake.unpin(pinned)
        await fake.wait_for(lambda: sync.count("add_messages") == 2)
        text = await ask(fake, "What does rule 7 say about spoilers?")
        assert "no spoilers" not in text
        assert docs.bot is not None and docs.bot.knowledge is not None
        sources = {s.name: s.chunks for s in await docs.bot.knowledge.sources(int(fake.guild_id))}
        assert sources[f"pins:{rules}"] == 1


async def test_a_member_who_cannot_read_a_channel_never_gets_its_content(docs: Harness) -> None:
    fake = docs.fake
    staff = fake.add_channel("staff")
    outsider = fake.add_member("outsider")
    await fake.deny(staff, outsider, P.VIEW_CHANNEL)
    async with docs.running():
        await fake.send_message("The vault combination is 4417-Kilo.", channel_id=staff)
        await admin(fake, "add", {"channel": staff})
        # An admin sees the answer and which sources the question may draw on.
        it = await fake.send_interaction(
            "docs", {"question": "What is the vault combination?"}, subcommand="ask", permissions=MANAGE_SERVER
        )
        summary = await fake.wait_for_response(it, answered, timeout=30)
        assert "4417-Kilo" in summary.content and f"`channel:{staff}`" in summary.content
        # The outsider asks the same: nothing of the channel, not even that it exists.
        text = await ask(fake, "What is the vault combination?", user=outsider)
        assert "4417" not in text and staff not in text
        # Permissions are read at question time: lose access later, lose the answers too.
        await fake.deny(staff, fake.user, P.READ_MESSAGE_HISTORY)
        text = await ask(fake, "What is the vault combination?")
        assert "4417" not in text


async def test_servers_never_see_each_others_documents(docs: Harness) -> None:
    fake = docs.fake
    other = fake.add_guild("Other")
    other_channel = fake.channel_by_name("general", other)
    async with docs.running():
        await admin(fake, "add", {"file": ("rules.md", RULES)})
        text = await ask(fake, "When are the meetings held?", channel_id=other_channel)
        assert "B12" not in text and "no model was run" in text
        listed = await admin(fake, "list", channel_id=other_channel)
        assert "Nothing is indexed" in listed.content


async def test_removing_a_source_removes_everything_of_it(docs: Harness) -> None:
    fake = docs.fake
    mods = fake.add_role("mods", P.MANAGE_GUILD)
    fake.add_member(fake.user, roles=[mods])  # autocomplete carries the member's real permissions
    async with docs.running():
        await admin(fake, "add", {"file": ("rules.md", RULES)})
        it = await fake.send_autocomplete("docs", {"name": "rul"}, "name", subcommand="remove")
        choices = await fake.wait_for_response(it, lambda s: s.callback_type == 8)
        assert choices.steps[0].request.json["data"]["choices"] == [{"name": "rules.md", "value": "rules.md"}]
        removed = await admin(fake, "remove", {"name": "rules.md"})
        assert "Removed `rules.md`" in removed.content
        text = await ask(fake, "When are the meetings held? room B12 Thursdays")
        assert "B12" not in text
        assert docs.bot is not None and docs.bot.knowledge is not None
        assert await docs.bot.knowledge.sources(int(fake.guild_id)) == []
        hits = await docs.bot.knowledge.kb.search(int(fake.guild_id), "meetings Thursdays B12", can_read=lambda c: True)
        assert hits == []


async def test_non_admins_are_refused_the_admin_subcommands(docs: Harness) -> None:
    fake = docs.fake
    async with docs.running():
        for sub, options in (
            ("add", {"file": ("rules.md", RULES)}),
            ("list", {}),
            ("remove", {"name": "rules.md"}),
            ("sync", {}),
        ):
            it = await fake.send_interaction("docs", options, subcommand=sub, permissions="0")
            summary = await fake.wait_for_response(it)
            assert summary.content == REFUSAL and summary.ephemeral
        it = await fake.send_autocomplete("docs", {"name": ""}, "name", subcommand="remove")
        choices = await fake.wait_for_response(it, lambda s: s.callback_type == 8)
        assert choices.steps[0].request.json["data"]["choices"] == []
    assert fake.cdn_reads == []  # the refused file was never downloaded


async def test_bad_inputs_get_clear_private_messages(docs: Harness) -> None:
    fake = docs.fake
    docs.settings_overrides["max_attachment_bytes"] = 1024
    other = fake.add_guild("Other")
    other_channel = fake.channel_by_name("general", other)
    async with docs.running():
        wrong = await admin(fake, "add", {"file": ("tool.exe", b"MZ\x90\x00")})
        assert "unsupported type" in wrong.content and wrong.ephemeral
        large = await admin(fake, "add", {"file": ("huge.txt", b"x" * 4096)})
        assert "too large" in large.content and "1 KB" in large.content
        assert fake.cdn_reads == []  # type and size were checked before any download
        link = f"https://discord.com/channels/{other}/{other_channel}/123456789012345678"
        foreign = await admin(fake, "add", {"link": link})
        assert "another server" in foreign.content
        nonsense = await admin(fake, "add", {"link": "not a link"})
        assert "not a message link" in nonsense.content
        hidden = fake.add_channel("hidden")
        await fake.deny(hidden, fake.bot_user, P.VIEW_CHANNEL)
        blind = await admin(fake, "add", {"channel": hidden})
        assert "I need **View Channel** and **Read Message History**" in blind.content
        secret = fake.add_channel("secret")
        await fake.deny(secret, fake.user, P.VIEW_CHANNEL)
        msg = await fake.send_message("top secret", channel_id=secret, author=fake.add_member("mod"))
        link = f"https://discord.com/channels/{fake.guild_id}/{secret}/{msg['id']}"
        unreadable = await admin(fake, "add", {"link": link})
        assert f"You can't read <#{secret}>" in unreadable.content
        none = await admin(fake, "add")
        assert "exactly one" in none.content
        missing = await admin(fake, "remove", {"name": "nope.md"})
        assert "no source named `nope.md`" in missing.content


async def test_sync_rereads_channels_and_pins(docs: Harness) -> None:
    fake = docs.fake
    faq = fake.add_channel("faq")
    async with docs.running():
        await fake.send_message("Lockers close at 22:00.", channel_id=faq)
        await admin(fake, "add", {"channel": faq})
        later = await fake.send_message("Bikes go in the yard.", channel_id=faq)
        synced = await admin(fake, "sync", until=lambda s: s.content.startswith("🔄"))
        assert f"`channel:{faq}`: 2 chunks" in synced.content
        text = await ask(fake, "Where do bikes go?")
        assert "yard" in text and later["id"] in text


class GatedEmbedder:
    """The real embedder, held before its second batch until the test opens the gate."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches = 0
        self.waiting = asyncio.Event()
        self.gate = asyncio.Event()

    async def aembed(self, texts: Any) -> Any:
        self.batches += 1
        if self.batches == 2:
            self.waiting.set()
            await self.gate.wait()
        return await self.inner.aembed(texts)


async def test_indexing_a_large_source_never_blocks_other_answers(docs: Harness) -> None:
    fake = docs.fake
    big = "\n\n".join(f"## Part {n}\n\nPart {n} covers subject {n} in some detail. " * 3 for n in range(100))
    async with docs.running() as bot:
        assert bot.knowledge is not None
        gated = GatedEmbedder(bot.knowledge.kb.embedder)
        bot.knowledge.kb.embedder = gated
        adding = await fake.send_interaction(
            "docs", {"file": ("big.md", big.encode())}, subcommand="add", permissions=MANAGE_SERVER
        )
        await asyncio.wait_for(gated.waiting.wait(), 30)  # the first batch is in, the second one held
        progress = await fake.wait_for_response(adding, lambda s: "indexed 64/" in s.content)
        assert "indexed 64/" in progress.content
        docs.small.reply = "hello while indexing"
        it = await fake.send_interaction("ask", {"prompt": "hi"})
        answer = await docs.wait_answered(it)
        assert "hello while indexing" in answer.content
        gated.gate.set()
        done = await fake.wait_for_response(adding, lambda s: s.content.startswith("✅"), timeout=30)
        assert "Indexed `big.md`" in done.content


async def test_without_a_knowledge_base_docs_says_so(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        it = await fake.send_interaction("docs", {"question": "anything?"}, subcommand="ask")
        summary = await fake.wait_for_response(it)
    assert summary.content == "The knowledge base is not set up on this bot." and summary.ephemeral


async def test_a_failing_model_is_reported_not_crashed(docs: Harness) -> None:
    fake = docs.fake
    for backend in docs.backends.values():
        backend.fail = BackendUnavailable("down for the test")
    async with docs.running():
        await admin(fake, "add", {"file": ("rules.md", RULES)})
        it = await fake.send_interaction("docs", {"question": "When are the meetings held?"}, subcommand="ask")
        summary = await fake.wait_for_response(it, lambda s: s.content.startswith("⚠️"), timeout=30)
    assert summary.content == f"⚠️ {BackendUnavailable.user_text}"


async def test_a_private_thread_is_only_for_those_who_may_read_it(docs: Harness) -> None:
    fake = docs.fake
    mods = fake.add_role("mods", P.MANAGE_GUILD | P.MANAGE_THREADS)
    fake.add_member(fake.user, roles=[mods])
    outsider = fake.add_member("outsider")
    async with docs.running():
        thread = await fake.create_thread("planning", private=True)
        await fake.send_message("The surprise party is on June 3rd.", channel_id=thread["id"])
        added = await admin(fake, "add", {"channel": thread["id"]})
        assert "Indexed `channel:" in added.content
        text = await ask(fake, "When is the surprise party?")
        assert "June 3rd" in text
        text = await ask(fake, "When is the surprise party?", user=outsider)
        assert "June" not in text  # the parent channel is open to everyone; the private thread is not


async def test_a_rag_request_through_ask_reads_only_what_the_asker_may(docs: Harness) -> None:
    fake = docs.fake
    staff = fake.add_channel("staff")
    outsider = fake.add_member("outsider")
    await fake.deny(staff, outsider, P.VIEW_CHANNEL)
    async with docs.running():
        await fake.send_message("The vault combination is 4417-Kilo.", channel_id=staff)
        await admin(fake, "add", {"channel": staff})
        docs.small.reply = "from the documents"
        it = await fake.send_interaction("ask", {"prompt": "What is the vault combination?", "task": "rag"})
        answer = await docs.wait_answered(it, timeout=30)
        assert "4417-Kilo" in answer.content
        calls = docs.model_calls()
        it = await fake.send_interaction(
            "ask", {"prompt": "What is the vault combination?", "task": "rag"}, user=outsider
        )
        answer = await docs.wait_answered(it, timeout=30)
        assert "4417" not in answer.content
        assert docs.model_calls() == calls  # nothing the outsider may read: no model was run


async def test_a_rag_turn_in_a_chat_thread_reads_only_what_the_member_may(docs: Harness) -> None:
    from tests.e2e.test_bot_chat import replying_to, start_chat

    fake = docs.fake
    staff = fake.add_channel("staff")
    async with docs.running():
        assert docs.store is not None
        await docs.store.update_guild_config(int(fake.guild_id), 1, "test", rate_limit_burst=10)
        await fake.send_message("The vault combination is 4417-Kilo.", channel_id=staff)
        await admin(fake, "add", {"channel": staff})
        docs.small.reply = "from the documents"
        thread = await start_chat(fake, "hello")
        await docs.wait_final_message(thread)
        asked = await fake.send_message("According to the docs, what is the vault combination?", channel_id=thread)
        reply = await fake.wait_for_message(thread, replying_to(asked))
        assert "4417-Kilo" in reply["content"]
        # The member loses access to #staff: the next turn in the same thread draws nothing from it.
        await fake.deny(staff, fake.user, P.READ_MESSAGE_HISTORY)
        calls = docs.model_calls()
        asked = await fake.send_message("According to the docs, what is the vault combination?", channel_id=thread)
        reply = await fake.wait_for_message(thread, replying_to(asked))
        assert "4417" not in reply["content"]
        assert docs.model_calls() == calls
