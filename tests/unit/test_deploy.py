"""The deployment files: compose.yaml (+ compose.gpu.yaml) valid against the Compose Specification's JSON schema,
a bot that waits for healthy dependencies and reads only settings that exist, and images that are what they say
(the CPU image carries no CUDA; the GPU one runs the small tier on onnxruntime-gpu). Containers can't be built
here: these checks are what can be proved without them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft201909Validator

from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "tests" / "data" / "compose_spec.json").read_text())


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text())
    assert isinstance(data, dict)
    return data


def merged(*names: str) -> dict[str, Any]:
    """Compose's merge of several files, for the keys these files use: later services' keys replace earlier ones."""
    out: dict[str, Any] = {"services": {}, "volumes": {}}
    for name in names:
        data = load(name)
        for service, spec in data.get("services", {}).items():
            out["services"].setdefault(service, {}).update(spec)
        out["volumes"].update(data.get("volumes") or {})
    return out


@pytest.mark.parametrize("name", ["compose.yaml", "compose.gpu.yaml"])
def test_compose_files_are_valid_against_the_compose_schema(name: str) -> None:
    errors = sorted(Draft201909Validator(SCHEMA).iter_errors(load(name)), key=lambda e: list(e.path))
    assert [f"{list(e.path)}: {e.message}" for e in errors] == []


def test_the_schema_check_can_fail() -> None:
    broken = load("compose.yaml")
    broken["services"]["bot"]["depends_on"] = {"postgres": {"condition": "when_it_feels_like_it"}}
    assert list(Draft201909Validator(SCHEMA).iter_errors(broken))


@pytest.mark.parametrize("files", [("compose.yaml",), ("compose.yaml", "compose.gpu.yaml")])
def test_the_bot_starts_only_after_healthy_dependencies(files: tuple[str, ...]) -> None:
    services = merged(*files)["services"]
    assert set(services) == {"bot", "postgres", "llm"}
    for name, spec in services.items():
        if name != "bot":
            assert spec["healthcheck"]["test"], f"{name} has no health check"
    assert services["bot"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "llm": {"condition": "service_healthy"},
    }
    env = services["bot"].get("environment", {})
    # The bot talks to the compose network's services, by name, on the ports they listen on.
    assert env["SWITCHBOARD_LARGE_URL"] == "http://llm:8080/v1"
    assert (
        env["SWITCHBOARD_DATABASE_URL"].startswith("postgresql+asyncpg://")
        and "@postgres:5432/" in env["SWITCHBOARD_DATABASE_URL"]
    )
    assert "--port" in services["llm"]["command"] and "8080" in services["llm"]["command"]


def test_the_bots_health_check_asks_its_own_health_endpoint() -> None:
    bot = merged("compose.yaml", "compose.gpu.yaml")["services"]["bot"]
    port = bot["environment"]["SWITCHBOARD_METRICS_PORT"]
    assert bot["environment"]["SWITCHBOARD_METRICS_HOST"] == "0.0.0.0"  # Prometheus scrapes it over the network
    assert f"http://127.0.0.1:{port}/health" in " ".join(bot["healthcheck"]["test"])
    assert "ports" not in bot  # exposed to the compose network, not published on the host


def test_the_bot_reads_only_settings_that_exist_and_no_secret_is_written_in() -> None:
    services = merged("compose.yaml", "compose.gpu.yaml")["services"]
    fields = {f"SWITCHBOARD_{name.upper()}" for name in Settings.model_fields} | {"DISCORD_TOKEN"}
    for name, value in services["bot"]["environment"].items():
        assert name in fields, f"{name} is not a setting"
        if name in {"DISCORD_TOKEN", "SWITCHBOARD_SECRET_KEY"}:
            assert re.fullmatch(r"\$\{[A-Z_]+(:?[-?][^}]*)?\}", value), f"{name} must come from the environment"
    password = load("compose.yaml")["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD:?")


def _run_lines(dockerfile: str) -> str:
    text = (ROOT / dockerfile).read_text()
    return "\n".join(line for line in text.replace("\\\n", " ").splitlines() if line.startswith("RUN "))


def test_the_cpu_image_carries_no_cuda() -> None:
    runs = _run_lines("Dockerfile")
    # torch from PyTorch's CPU index: PyPI's Linux torch is the CUDA build.
    assert re.search(r"pip install torch==[\d.]+ --index-url https://download\.pytorch\.org/whl/cpu", runs)
    assert "onnxruntime-genai-cuda" not in runs
    assert "grep -i '^nvidia-'" in runs  # the build fails if any CUDA wheel got in anyway


def test_the_gpu_image_runs_onnx_runtime_on_cuda() -> None:
    runs = _run_lines("Dockerfile.cuda")
    assert "onnxruntime-genai-cuda==" in runs and "download.pytorch.org/whl/cpu" not in runs
    gpu = merged("compose.yaml", "compose.gpu.yaml")["services"]
    assert gpu["bot"]["build"]["dockerfile"] == "Dockerfile.cuda"
    assert gpu["llm"]["image"].startswith("vllm/vllm-openai")
