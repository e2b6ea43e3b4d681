"""A local large tier whose preferred larger model is not downloaded runs its packaged source, and start-up says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.catalogue import Catalogue, RoutingPolicy, load_routing
from inference.router import Router
from inference.serving.service import Switchboard
from inference.types import Tier
from tests.fakes.backends import ScriptedBackend
from tests.unit.inference.serving.test_service import Fixed

LOCAL = {"kind": "transformers", "source": "packaged:smollm2", "tier": "large", "prefer": "example/larger-instruct"}
SMALL = {"kind": "openai", "base_url": "http://small.invalid/v1", "model": "s", "tier": "small"}


def _board(cache_dir: Path) -> Switchboard:
    catalogue = Catalogue.model_validate({"models": {"small-fake": SMALL, "local-large": LOCAL}})
    policy = RoutingPolicy(tiers=load_routing().tiers, models={Tier.SMALL: "small-fake", Tier.LARGE: "local-large"})
    backends = {"small-fake": ScriptedBackend("small-fake"), "local-large": ScriptedBackend("local-large")}
    return Switchboard(
        Router(Fixed(), policy, catalogue), cache_dir=cache_dir, backend_factory=lambda name, spec: backends[name]
    )


async def test_start_up_says_the_packaged_model_stands_in(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notes = await _board(tmp_path).start(probe=False)
    assert notes == [
        "local-large runs packaged:smollm2: example/larger-instruct is not downloaded "
        "(`python -m bot models prepare` fetches it where a model hub is reachable)"
    ]
    assert "example/larger-instruct is not downloaded" in caplog.text


async def test_once_downloaded_start_up_has_nothing_to_say(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--example--larger-instruct"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("2" * 40)
    (repo / "snapshots" / ("2" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("2" * 40) / "config.json").write_text("{}")
    assert await _board(tmp_path).start(probe=False) == []
