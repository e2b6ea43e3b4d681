"""Config is validated at load: a bad file gets an error naming the field and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.catalogue import load_catalogue, load_routing
from inference.errors import ConfigError


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_default_config_loads_and_is_consistent():
    catalogue = load_catalogue()
    policy = load_routing(catalogue=catalogue)
    assert policy.models["small"] in catalogue.models


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("models:\n  m: {kind: onnx, source: packaged:smollm2, tier: tiny}\n", "models.m.onnx.tier"),
        ("models:\n  m: {kind: onnx, source: packaged:smollm2, tier: small, precision: int3}\n", "precision"),
        ("models:\n  m: {kind: onnx, source: packaged:nope, tier: small}\n", "unknown packaged model"),
        (
            "models:\n  m: {kind: openai, base_url: ftp://x, model: y, tier: large}\n",
            "base_url: must be an http",
        ),
        (
            "models:\n  m: {kind: openai, base_url: http://x, model: y, tier: large, api_key_env: 'sk-123 4'}\n",
            "api_key_env: must be the NAME",
        ),
        ("models:\n  m: {kind: grpc, tier: large}\n", "kind"),
        ("models:\n  m: {kind: onnx, source: packaged:smollm2, tier: small, colour: red}\n", "colour"),
        (
            "models:\n  m: {kind: onnx, source: packaged:smollm2, tier: small, fallback: ghost}\n",
            "unknown model 'ghost'",
        ),
        ("models: [\n", "not valid YAML"),
    ],
)
def test_bad_catalogue_names_field_and_problem(tmp_path, yaml_text, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(")) as info:
        load_catalogue(write(tmp_path, "models.yaml", yaml_text))
    assert "models.yaml" in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_catalogue(tmp_path / "nope.yaml")


def test_routing_needs_every_task_and_known_models(tmp_path):
    catalogue = load_catalogue()
    bad = write(
        tmp_path,
        "routing.yaml",
        "tiers: {chat: small}\nmodels: {small: smollm2-onnx, large: large-endpoint}\n",
    )
    with pytest.raises(ConfigError, match=r"tiers: .*missing: classification"):
        load_routing(bad, catalogue)
    text = Path("config/routing.yaml").read_text().replace("large: large-endpoint", "large: gpt-99")
    with pytest.raises(ConfigError, match=r"routing models\.large: unknown model 'gpt-99'; known: large-endpoint"):
        load_routing(write(tmp_path, "r.yaml", text), catalogue)


def test_threshold_out_of_range_is_named(tmp_path):
    text = Path("config/routing.yaml").read_text().replace("threshold: 0.5", "threshold: 1.5")
    with pytest.raises(ConfigError, match=r"escalation\.threshold"):
        load_routing(write(tmp_path, "r.yaml", text))


def test_env_interpolation(tmp_path, monkeypatch):
    monkeypatch.setenv("LARGE_URL_FOR_TEST", "https://llm.example.com/v1/")
    path = write(
        tmp_path,
        "m.yaml",
        "models:\n  m: {kind: openai, base_url: '${LARGE_URL_FOR_TEST}', model: '${NOPE:-qwen}', tier: large}\n",
    )
    spec = load_catalogue(path).models["m"]
    assert spec.base_url == "https://llm.example.com/v1" and spec.model == "qwen"
