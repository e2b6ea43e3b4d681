"""Admin answers longer than one message go out as several private messages, each within Discord's limit and
cut only between lines."""

from __future__ import annotations

from inference.catalogue import OpenAIModel
from inference.types import Tier
from tests.e2e.bot_harness import PUBLIC_HOST, Harness

MANAGE_SERVER = "32"
BUILT_IN = ("small-fake", "large-fake", "local-fake")


async def test_a_long_models_list_is_paged_at_line_boundaries(switchboard: Harness) -> None:
    fake = switchboard.fake
    names = [f"an-endpoint-with-a-rather-long-name-{i:02d}" for i in range(60)]
    async with switchboard.running():
        assert switchboard.store is not None
        for name in names:
            spec = OpenAIModel(base_url=f"https://{PUBLIC_HOST}/v1/{name}", model=name, tier=Tier.SMALL)
            await switchboard.store.add_model(int(fake.guild_id), 1, name, spec)
        it = await fake.send_interaction("models", {}, subcommand="list", permissions=MANAGE_SERVER)
        summary = await fake.wait_for_response(
            it, lambda s: bool(s.messages) and f"**{names[-1]}** ·" in s.messages[-1]["content"]
        )
    pages = [m["content"] for m in summary.messages]
    assert len(pages) >= 3
    # The first page replaces the deferred "thinking" response; the rest follow, private like it.
    assert summary.kinds == ["callback", "edit_original", *["followup"] * (len(pages) - 1)]
    assert all(m["flags"] & 64 for m in summary.messages)
    assert all(len(page) <= 2000 for page in pages)
    lines = [line for page in pages for line in page.split("\n")]
    # Every line is one whole model line (its name first, its health last) and every model is there once.
    assert [line.split(" · ", 1)[0] for line in lines] == [f"**{n}**" for n in (*BUILT_IN, *names)]
    assert all(line.endswith("not loaded yet") for line in lines)
