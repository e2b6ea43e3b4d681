"""The command-line contract other tools depend on: `python -m bot route|ask|models|--help`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from inference.types import TASKS
from tests.fakes.openai_server import FakeOpenAIServer, ok, openai_server, unused_port

__all__ = ["openai_server"]  # the fixture, used below

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"task", "tier", "model", "confidence", "reason"}


@pytest.fixture(scope="module")
def env(prepared_classifier) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    # Nothing listens there: the large tier's stand-in must be reported, quickly.
    env["SWITCHBOARD_LARGE_URL"] = f"http://127.0.0.1:{unused_port()}/v1"
    env["SWITCHBOARD_CACHE_DIR"] = str(prepared_classifier)
    env["PYTHONPATH"] = str(ROOT)
    return env


def run(
    args: list[str], env: dict[str, str], stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def check_route(out: dict[str, object]) -> None:
    assert set(out) == KEYS
    assert out["task"] in TASKS and out["tier"] in {"small", "large"}
    assert isinstance(out["model"], str) and out["model"]
    assert isinstance(out["confidence"], float) and 0 <= out["confidence"] <= 1
    assert isinstance(out["reason"], str) and out["reason"]


def test_help_lists_the_subcommands(env):
    result = run(["--help"], env)
    assert result.returncode == 0
    for sub in ("run", "route", "ask", "classify", "json", "models"):
        assert sub in result.stdout


def test_run_without_token_names_the_setting_in_one_line(env, tmp_path):
    result = subprocess.run([sys.executable, "-m", "bot"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "DISCORD_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_route_one_text(env):
    result = run(["route", "hey how's it going? :)"], env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    check_route(out)
    assert out["task"] == "chat" and out["tier"] == "small"


def test_route_jsonl_in_order_with_malformed_lines(env):
    lines = [
        {"text": "translate 'good morning' into Spanish"},
        "this is not json",
        {"text": "what's in this picture?", "attachments": [{"filename": "cat.png", "content_type": "image/png"}]},
        {"no_text": 1},
        {"text": "write a python function that merges two sorted lists"},
    ]
    stdin = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    result = run(["route"], env, stdin=stdin)
    assert result.returncode == 0, result.stderr
    outs = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(outs) == 5
    assert set(outs[1]) == {"error"} and "JSON" in outs[1]["error"]
    assert set(outs[3]) == {"error"} and "text" in outs[3]["error"]
    for out in (outs[0], outs[2], outs[4]):
        check_route(out)
    assert outs[0]["task"] == "conversion"
    assert outs[2]["task"] == "multimodal" and outs[2]["tier"] == "large"
    assert outs[4]["task"] == "code"
    # The large tier's endpoint is unreachable: the route names the local stand-in and says so.
    assert outs[2]["model"] == "smollm2-local" and "stands in" in outs[2]["reason"]


def test_route_answers_each_line_before_the_next_arrives(env):
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "route"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        for text in ("hello there", "summarise this paragraph for me please"):
            proc.stdin.write(json.dumps({"text": text}) + "\n")
            proc.stdin.flush()
            check_route(json.loads(proc.stdout.readline()))  # blocks unless the CLI flushed per line
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()


def test_models_list(env):
    result = run(["models", "list"], env)
    assert result.returncode == 0
    assert "smollm2-onnx" in result.stdout and "small tier" in result.stdout


def test_bad_config_is_one_clear_line(env, tmp_path):
    bad = tmp_path / "models.yaml"
    bad.write_text("models:\n  m: {kind: onnx, source: packaged:smollm2, tier: medium}\n")
    result = run(["route", "hi"], {**env, "SWITCHBOARD_CATALOGUE_PATH": str(bad)})
    assert result.returncode == 2
    assert "models.m" in result.stderr and "tier" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.real_model
def test_ask_streams_the_answer_and_reports_the_route(env, prepared_models):
    result = run(
        ["ask", "--max-new-tokens", "16", "What is the capital of France?"],
        {**env, "SWITCHBOARD_CACHE_DIR": str(prepared_models)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    route = json.loads(result.stderr.strip().splitlines()[-1])
    assert route["tier"] == "small" and route["model"] == "smollm2-onnx"
    assert route["provider"].startswith("onnxruntime")
    assert route["time_to_first_token_s"] is not None and route["total_s"] >= route["time_to_first_token_s"]


def test_bad_setting_is_named_without_its_value(env):
    result = run(["models", "list"], {**env, "SWITCHBOARD_LOG_LEVEL": "loud", "DISCORD_TOKEN": "sentinel-Qq9"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: invalid settings: SWITCHBOARD_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"
    )


def test_route_skips_an_overlong_line_and_a_non_utf8_line_and_goes_on(env):
    from inference.cli import MAX_LINE_BYTES

    lines = [
        json.dumps({"text": "hello there"}).encode(),
        json.dumps({"text": "x" * (2 * MAX_LINE_BYTES)}).encode(),  # read in bounded pieces, never whole
        b'{"text": "caf\xe9 \xff"}',  # Latin-1, not UTF-8
        json.dumps({"text": "translate 'good morning' into Spanish"}).encode(),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "bot", "route"],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    outs = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert len(outs) == 4
    check_route(outs[0])
    assert set(outs[1]) == {"error"} and "too long" in outs[1]["error"]
    assert set(outs[2]) == {"error"} and "UTF-8" in outs[2]["error"]
    check_route(outs[3])
    assert outs[3]["task"] == "conversion"


def test_route_into_a_closed_pipe_exits_quietly(env, tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"text": f"hello number {i}"}) + "\n" for i in range(3000)))
    script = f'"{sys.executable}" -m bot route < "{big}" | head -1; echo "route exit ${{PIPESTATUS[0]}}" >&2'
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    check_route(json.loads(result.stdout))  # head printed the first answer
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1] in {"route exit 0", "route exit 141"}


# --- ask --task, classify, json: both tiers on a scripted OpenAI-compatible server -----------------------


def fake_endpoint_env(env: dict[str, str], server: FakeOpenAIServer, tmp_path: Path) -> dict[str, str]:
    """Both tiers served by ``server`` (a catalogue and routing file of their own)."""
    model = f"{{kind: openai, base_url: '{server.base_url}', model: fake-model, retry: {{max_attempts: 1}}"
    catalogue = tmp_path / "models.yaml"
    catalogue.write_text(f"models:\n  small-fake: {model}, tier: small}}\n  large-fake: {model}, tier: large}}\n")
    routing = tmp_path / "routing.yaml"
    policy = (ROOT / "config" / "routing.yaml").read_text()
    routing.write_text(
        policy.replace("small: smollm2-onnx", "small: small-fake").replace("large: large-endpoint", "large: large-fake")
    )
    return {**env, "SWITCHBOARD_CATALOGUE_PATH": str(catalogue), "SWITCHBOARD_ROUTING_PATH": str(routing)}


async def run_async(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Like :func:`run`, without blocking the event loop the fake server answers on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, stdout=PIPE, stderr=PIPE, env=env, cwd=ROOT
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def rewrite(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))


def route_line(stderr: str) -> dict[str, object]:
    route = json.loads(stderr.strip().splitlines()[-1])
    assert isinstance(route["tokens"], int) and isinstance(route["tokens_per_s"], float)
    return route


async def test_ask_with_a_task_uses_its_pipeline_and_reports_tokens(env, openai_server, tmp_path):
    openai_server.script(ok("def f():\n    return 1"))
    rc, out, err = await run_async(
        ["ask", "--task", "code", "a function in python"], fake_endpoint_env(env, openai_server, tmp_path)
    )
    assert rc == 0, err
    assert out == "```python\ndef f():\n    return 1\n```\n"  # the code pipeline's fences
    route = route_line(err)
    assert route["task"] == "code" and route["tokens"] > 0 and route["tokens_per_s"] > 0  # type: ignore[operator]
    (request,) = openai_server.completions
    assert "fenced code block" in request.body["messages"][0]["content"]


async def test_classify_prints_only_given_labels_with_scores(env, openai_server, tmp_path):
    openai_server.script(ok("positive"))
    rc, out, err = await run_async(
        ["classify", "I love it", "--labels", "positive,negative"], fake_endpoint_env(env, openai_server, tmp_path)
    )
    assert rc == 0, err
    result = json.loads(out)
    assert set(result) == {"labels", "scores"} and result["labels"] == ["positive"]
    assert set(result["scores"]) <= {"positive", "negative"}
    assert route_line(err)["task"] == "classification"


async def test_json_prints_only_the_valid_document(env, openai_server, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}')
    openai_server.script(ok('{"ok": true}'))
    rc, out, err = await run_async(
        ["json", "is water wet?", "--schema", str(schema)], fake_endpoint_env(env, openai_server, tmp_path)
    )
    assert rc == 0, err
    assert json.loads(out) == {"ok": True} and out.count("\n") == 1
    assert route_line(err)["task"] == "grammar"


async def test_json_exits_1_when_no_valid_document_comes(env, openai_server, tmp_path):
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}')
    openai_server.script(ok("not json at all"), ok("still not json"))
    rc, out, err = await run_async(
        ["json", "is water wet?", "--schema", str(schema)], fake_endpoint_env(env, openai_server, tmp_path)
    )
    assert rc == 1 and out == ""
    assert "error:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "words"),
    [('{"type": "nonsense"', "not valid JSON"), ('{"type": "nonsense"}', "can't be used")],
)
def test_json_refuses_a_broken_schema(env, tmp_path, content, words):
    schema = tmp_path / "schema.json"
    schema.write_text(content)
    result = run(["json", "x", "--schema", str(schema)], env)
    assert result.returncode == 2 and result.stdout == ""
    assert words in result.stderr and "Traceback" not in result.stderr
    missing = run(["json", "x", "--schema", str(tmp_path / "nope.json")], env)
    assert missing.returncode == 2 and "can't read the schema file" in missing.stderr


def test_classify_needs_two_labels(env):
    result = run(["classify", "x", "--labels", "only"], env)
    assert result.returncode == 2 and "at least two" in result.stderr


async def test_route_probes_operator_endpoints_with_the_operators_key(env, openai_server, tmp_path):
    # A large endpoint that needs the operator's key: without it the start-up probe reads "credentials
    # refused" and route would report a stand-in instead of the endpoint.
    openai_server.required_key = "sk-operator-key"
    endpoint_env = fake_endpoint_env(env, openai_server, tmp_path)
    keyed = "large-fake: {api_key_env: SWITCHBOARD_LARGE_API_KEY, fallback: small-fake, kind: openai,"
    await asyncio.to_thread(
        rewrite, Path(endpoint_env["SWITCHBOARD_CATALOGUE_PATH"]), "large-fake: {kind: openai,", keyed
    )
    code, out, err = await run_async(
        ["route", "write a python function that parses ISO dates"],
        {**endpoint_env, "SWITCHBOARD_LARGE_API_KEY": "sk-operator-key"},
    )
    assert code == 0, err
    route = json.loads(out)
    assert route["tier"] == "large" and route["model"] == "large-fake", route
    probes = [r for r in openai_server.requests if r.path.endswith("/models")]
    assert probes and all(r.headers.get("Authorization") == "Bearer sk-operator-key" for r in probes)
