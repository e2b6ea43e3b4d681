"""`python -m bot` with a database it cannot use: one clear line, exit code 2, the file untouched.

The store opens before Discord is contacted, so a dummy token is enough and no network is used.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(prepared_classifier: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        DISCORD_TOKEN="dummy-token-never-sent",
        SWITCHBOARD_CACHE_DIR=str(prepared_classifier),
        PYTHONPATH=str(ROOT),
    )
    return env


def run_bot(env: dict[str, str], database: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot"],
        capture_output=True,
        text=True,
        env={**env, "SWITCHBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{database}"},
        cwd=cwd,
        timeout=120,
    )


def check_one_clear_line(result: subprocess.CompletedProcess[str], database: Path, reason: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if str(database) in line]
    assert len(lines) == 1, result.stderr
    assert reason in lines[0] and "move it aside" in lines[0] and "SWITCHBOARD_DATABASE_URL" in lines[0]


def test_corrupt_database_is_named_and_left_unchanged(env: dict[str, str], tmp_path: Path) -> None:
    database = tmp_path / "switchboard.db"
    original = b"this is not an SQLite database\n" + bytes(range(256)) * 64
    database.write_bytes(original)
    result = run_bot(env, database, tmp_path)
    check_one_clear_line(result, database, "not a database")
    assert database.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["switchboard.db"]  # no journal or copy left behind


def test_unreadable_database_is_named(env: dict[str, str], tmp_path: Path) -> None:
    database = tmp_path / "switchboard.db"
    database.mkdir()  # a directory where the file should be: unreadable even for root
    result = run_bot(env, database, tmp_path)
    check_one_clear_line(result, database, "unable to open")
    assert database.is_dir() and list(database.iterdir()) == []
