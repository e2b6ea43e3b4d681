"""`python -m bot docs add|list|remove|ask --server ID` on the bot's database (SWITCHBOARD_DATABASE_URL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_cli import env, fake_endpoint_env, run, run_async
from tests.fakes.openai_server import FakeOpenAIServer, ok, openai_server

__all__ = ["env", "openai_server"]  # fixtures, used below

RULES = "# Club rules\n\nMeetings are on Thursdays at 18:00 in room B12.\n\n## Fees\n\nFees are 5 EUR a month.\n"


@pytest.fixture(scope="module")
def embedder_cache(prepared_embedder: Path) -> str:
    """The cache the CLI uses: the classifier and the knowledge embedder (never written in the user's cache)."""
    return str(prepared_embedder)


@pytest.fixture
def docs_env(env: dict[str, str], embedder_cache: str, tmp_path: Path) -> dict[str, str]:
    return {
        **env,
        "SWITCHBOARD_CACHE_DIR": embedder_cache,
        "SWITCHBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}",
    }


def test_add_list_remove(docs_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "rules.md").write_text(RULES)
    (tmp_path / "tool.exe").write_bytes(b"MZ")
    added = run(["docs", "add", str(tmp_path / "rules.md"), str(tmp_path / "tool.exe"), "--server", "1"], docs_env)
    assert added.returncode == 1  # one file refused, the other indexed
    assert "added rules.md: 2 chunks" in added.stdout and "can't be indexed" in added.stderr
    listed = run(["docs", "list", "--server", "1", "--json"], docs_env)
    assert json.loads(listed.stdout) == [{"name": "rules.md", "kind": "file", "channel_id": None, "chunks": 2}]
    assert json.loads(run(["docs", "list", "--server", "2", "--json"], docs_env).stdout) == []
    assert run(["docs", "remove", "rules.md", "--server", "2"], docs_env).returncode == 1  # not that server's
    assert run(["docs", "remove", "rules.md", "--server", "1"], docs_env).returncode == 0
    assert json.loads(run(["docs", "list", "--server", "1", "--json"], docs_env).stdout) == []


async def test_ask_answers_with_citations_on_stderr(
    docs_env: dict[str, str], openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    environment = fake_endpoint_env(docs_env, openai_server, tmp_path)
    (tmp_path / "rules.md").write_text(RULES)
    rc, _, err = await run_async(["docs", "add", str(tmp_path / "rules.md"), "--server", "1"], environment)
    assert rc == 0, err
    openai_server.script(ok("Meetings are on Thursdays at 18:00 in room B12 [1]."))
    rc, out, err = await run_async(["docs", "ask", "when are meetings?", "--server", "1"], environment)
    assert rc == 0, err
    assert out.startswith("Meetings are on Thursdays at 18:00 in room B12 [1].")
    assert "[1] rules.md, section 'Club rules' (line 3)" in out
    line = json.loads(err.strip().splitlines()[-1])
    assert {"task", "tier", "model", "reason", "citations"} <= set(line) and line["task"] == "rag"
    assert line["citations"][0] == {
        "source": "rules.md",
        "position": "section 'Club rules' (line 3)",
        "quote": "Meetings are on Thursdays at 18:00 in room B12.",
    }
    (request,) = openai_server.completions
    assert "<source id=" in request.body["messages"][1]["content"]
    # another server has nothing: it says so, and no model is asked
    rc, out, err = await run_async(["docs", "ask", "when are meetings?", "--server", "2"], environment)
    assert rc == 0 and "couldn't find anything relevant" in out
    assert json.loads(err.strip().splitlines()[-1])["citations"] == [] and len(openai_server.completions) == 1
