"""``models prepare``'s plan: the preferred larger model of a local large tier is downloaded where a hub is
reachable; offline, the step says that the packaged model stands in, and nothing fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.build.prepare import _preferred, plan
from inference.build.sources import fetch_hub_model
from inference.catalogue import Catalogue, OnnxModel, TransformersModel

LARGE = TransformersModel(source="packaged:smollm2", tier="large", prefer="switchboard-tests/no-such-model")
SMALL = OnnxModel(source="packaged:smollm2", tier="small")


def _catalogue() -> Catalogue:
    return Catalogue(models={"local-large": LARGE, "small": SMALL})


def test_the_plan_downloads_a_preferred_model_unless_told_not_to(tmp_path: Path) -> None:
    labels = [step.label for step in plan(_catalogue(), tmp_path)]
    assert "local-large: switchboard-tests/no-such-model" in labels
    assert "local-large (transformers)" in labels  # the packaged model is still prepared: it stands in
    offline = [step.label for step in plan(_catalogue(), tmp_path, download=False)]
    assert "local-large: switchboard-tests/no-such-model" not in offline


def test_an_unreachable_or_unknown_preferred_model_says_the_source_stands_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    said: list[str] = []
    assert _preferred("local-large", LARGE, tmp_path, said.append) is None
    assert said == ["downloading switchboard-tests/no-such-model"]
    out = capsys.readouterr().out
    assert "switchboard-tests/no-such-model could not be downloaded" in out and "packaged:smollm2 stands in" in out


def test_a_finished_download_is_found_without_the_network(tmp_path: Path) -> None:
    repo = tmp_path / "hub" / "models--example--larger"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("1" * 40)
    snapshot = repo / "snapshots" / ("1" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert fetch_hub_model("example/larger", tmp_path) == snapshot
