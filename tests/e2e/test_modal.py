"""Modals against the fake Discord: the bot shows one (callback type 9), the user submits it (MODAL_SUBMIT)."""

from __future__ import annotations

from typing import Any

import discord
from discord.ext import commands

from tests.fakes.discord import FakeDiscord


class Feedback(discord.ui.Modal, title="Send feedback"):
    """Throwaway modal: two text inputs; the submit is answered like any interaction."""

    topic: discord.ui.TextInput[Feedback] = discord.ui.TextInput(label="Topic", custom_id="topic")
    body: discord.ui.TextInput[Feedback] = discord.ui.TextInput(
        label="Details", custom_id="body", style=discord.TextStyle.paragraph, required=False
    )

    def __init__(self, *, defer: bool) -> None:
        super().__init__(custom_id="feedback")
        self.defer = defer

    async def on_submit(self, interaction: discord.Interaction) -> None:
        text = f"{self.topic.value}: {self.body.value or '(none)'}"
        if not self.defer:
            await interaction.response.send_message(text)
            return
        await interaction.response.defer(thinking=True)
        await interaction.edit_original_response(content=text)
        await interaction.followup.send("thanks")


class Open(discord.ui.View):
    @discord.ui.button(label="Feedback", custom_id="open-feedback")
    async def open(self, interaction: discord.Interaction, button: discord.ui.Button[Open]) -> None:
        await interaction.response.send_modal(Feedback(defer=False))


class ModalBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.05)

        @self.tree.command(name="feedback", description="Tell us something")
        async def feedback(interaction: discord.Interaction) -> None:
            await interaction.response.send_modal(Feedback(defer=True))

        @self.tree.command(name="button", description="A button that opens the modal")
        async def button(interaction: discord.Interaction) -> None:
            await interaction.response.send_message("Click below", view=Open())

    async def setup_hook(self) -> None:
        await self.tree.sync()


async def test_modal_shown_submitted_and_answered(fake_discord: FakeDiscord, run_bot: Any) -> None:
    async with run_bot(ModalBot()):
        opened = await fake_discord.send_interaction("feedback")
        shown = await fake_discord.wait_for_response(opened, lambda s: s.modal is not None)
        assert shown.callback_type == 9 and shown.original is None
        assert shown.modal is not None and shown.modal["custom_id"] == "feedback"
        assert shown.modal["title"] == "Send feedback"

        submit = await fake_discord.submit_modal("feedback", {"topic": "speed", "body": "faster please"})
        answered = await fake_discord.wait_for_response(submit, lambda s: s.followups)

    assert submit.type == 5 and submit.trigger is opened
    assert submit.payload["data"]["custom_id"] == "feedback"
    inputs = [c for row in submit.payload["data"]["components"] for c in row["components"]]
    assert [(c["type"], c["custom_id"], c["value"]) for c in inputs] == [
        (4, "topic", "speed"),
        (4, "body", "faster please"),
    ]
    assert answered.kinds == ["callback", "edit_original", "followup"]
    assert answered.content == "speed: faster please" and answered.followups[0]["content"] == "thanks"
    meta = answered.original["interaction_metadata"] if answered.original else {}
    assert meta["type"] == 5 and meta["triggering_interaction_metadata"]["id"] == opened.id


async def test_modal_from_a_button_answers_in_place(fake_discord: FakeDiscord, run_bot: Any) -> None:
    async with run_bot(ModalBot()):
        posted = await fake_discord.wait_for_response(await fake_discord.send_interaction("button"))
        assert posted.original is not None
        click = await fake_discord.send_component(posted.original, "open-feedback")
        await fake_discord.wait_for_response(click, lambda s: s.modal is not None)

        submit = await fake_discord.submit_modal("feedback", {"topic": "bugs"})
        answered = await fake_discord.wait_for_response(submit)

    assert submit.message_id == posted.original["id"]  # the submit carries the message the button is on
    assert answered.callback_type == 4 and answered.content == "bugs: (none)"
    meta = answered.original["interaction_metadata"] if answered.original else {}
    assert meta["triggering_interaction_metadata"]["interacted_message_id"] == posted.original["id"]
