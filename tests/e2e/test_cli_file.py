"""`python -m bot ask TEXT --file PATH`: a file attached as a Discord user would attach it (same checks, same
prompt), both tiers on a scripted OpenAI-compatible server."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from PIL import Image

from tests.e2e.test_cli import env, fake_endpoint_env, rewrite, route_line, run, run_async
from tests.fakes.openai_server import FakeOpenAIServer, ok, openai_server

__all__ = ["env", "openai_server"]  # fixtures, used below


def user_content(server: FakeOpenAIServer) -> object:
    (request,) = server.completions
    return request.body["messages"][-1]["content"]


async def test_text_files_go_into_the_prompt(env: dict[str, str], openai_server: FakeOpenAIServer, tmp_path: Path):
    openai_server.script(ok("PURPLE-42"))
    notes = tmp_path / "notes.txt"
    notes.write_text("The launch password is PURPLE-42.\n")
    log = tmp_path / "server.log"
    log.write_text("12:00 started\n12:01 ready\n")
    rc, out, err = await run_async(
        ["ask", "what is the launch password?", "--file", str(notes), "--file", str(log)],
        fake_endpoint_env(env, openai_server, tmp_path),
    )
    assert rc == 0, err
    assert out == "PURPLE-42\n"
    content = user_content(openai_server)
    assert isinstance(content, str)
    assert "File `notes.txt`:\n```\nThe launch password is PURPLE-42.\n```" in content
    assert "File `server.log`:\n```\n12:00 started\n12:01 ready\n```" in content
    assert content.endswith("what is the launch password?")
    route_line(err)


async def test_missing_unreadable_or_refused_files_are_one_error_line_and_exit_2(
    env: dict[str, str], openai_server: FakeOpenAIServer, tmp_path: Path
):
    endpoint_env = fake_endpoint_env(env, openai_server, tmp_path)
    tool = tmp_path / "tool.zip"
    tool.write_bytes(b"PK\x03\x04")
    binary = tmp_path / "notes.txt"
    binary.write_bytes(b"MZ\x90\x00\x03\x00\x00\x00" * 8)
    cases = [
        (tmp_path / "missing.txt", f"error: {tmp_path / 'missing.txt'}: no such file"),
        (tmp_path, f"error: {tmp_path} is not a file"),
        (tool, "error: I can't read `tool.zip` (application/zip): attach text files"),
        (binary, "error: `notes.txt` isn't text: it looks like a binary file."),
    ]
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked.txt"
        locked.write_text("secret")
        locked.chmod(0)
        cases.append((locked, f"error: {locked}: can't be read"))
    for path, message in cases:
        rc, out, err = await run_async(["ask", "read it", "--file", str(path)], endpoint_env)
        assert rc == 2 and out == "", err
        (line,) = err.strip().splitlines()
        assert line.startswith(message), line
        assert "Traceback" not in err
    assert openai_server.completions == []


def png_file(path: Path) -> Path:
    out = io.BytesIO()
    Image.new("RGB", (2000, 1000), "green").save(out, format="PNG")
    path.write_bytes(out.getvalue())
    return path


async def test_an_image_goes_to_a_model_that_can_see(
    env: dict[str, str], openai_server: FakeOpenAIServer, tmp_path: Path
):
    openai_server.script(ok("A green rectangle."))
    endpoint_env = fake_endpoint_env(env, openai_server, tmp_path)
    rewrite(tmp_path / "models.yaml", "tier: large}", "tier: large, modalities: [text, image]}")
    rc, out, err = await run_async(
        ["ask", "what is in this picture?", "--file", str(png_file(tmp_path / "field.png"))], endpoint_env
    )
    assert rc == 0, err
    assert out == "A green rectangle.\n"
    content = user_content(openai_server)
    assert isinstance(content, list)
    assert content[0] == {"type": "text", "text": "what is in this picture?"}
    assert content[1]["type"] == "image_url" and content[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    route = route_line(err)
    assert route["task"] == "multimodal" and route["model"] == "large-fake"


async def test_an_image_without_an_image_model_is_noted_and_the_text_answered(
    env: dict[str, str], openai_server: FakeOpenAIServer, tmp_path: Path
):
    openai_server.script(ok("Grass is green."))
    rc, out, err = await run_async(
        ["ask", "why is grass green?", "--file", str(png_file(tmp_path / "field.png"))],
        fake_endpoint_env(env, openai_server, tmp_path),
    )
    assert rc == 0, err
    assert out == "Grass is green.\n"
    assert "note: no image model is configured, so field.png was not seen" in err.splitlines()
    assert user_content(openai_server) == "why is grass green?"  # plain text: no image part
    assert json.loads(err.strip().splitlines()[-1])["task"] != "multimodal"


def test_help_shows_the_file_option(env: dict[str, str]) -> None:
    result = run(["ask", "--help"], env)
    assert result.returncode == 0 and "--file PATH" in result.stdout and "repeatable" in result.stdout
