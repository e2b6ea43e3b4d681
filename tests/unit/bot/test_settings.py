"""One source of settings: `.env` works exactly as the environment, for the settings object and the catalogue."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import Settings
from inference.catalogue import load_catalogue
from inference.types import Tier

LARGE = ("SWITCHBOARD_LARGE_URL", "SWITCHBOARD_LARGE_MODEL", "SWITCHBOARD_LARGE_API_KEY")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*LARGE, "OPERATOR_OWN_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_the_large_endpoint_in_dotenv_reaches_the_catalogue(tmp_path: Path, clean_env: None) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "SWITCHBOARD_LARGE_URL=https://llm.example.com/v1\n"
        "SWITCHBOARD_LARGE_MODEL=my/model\n"
        "SWITCHBOARD_LARGE_API_KEY=sk-dotenv-SENTINEL\n"
    )
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.large_url == "https://llm.example.com/v1"
    spec = load_catalogue(env=settings.operator_env()).get("large-endpoint")
    assert spec.kind == "openai" and spec.tier is Tier.LARGE
    assert (spec.base_url, spec.model) == ("https://llm.example.com/v1", "my/model")
    # The key itself is looked up by the backend in the same operator environment.
    assert spec.api_key_env is not None
    assert settings.operator_env()[spec.api_key_env] == "sk-dotenv-SENTINEL"
    assert "sk-dotenv-SENTINEL" not in repr(settings) and "sk-dotenv-SENTINEL" not in repr(settings.operator_env())


def test_the_environment_wins_over_dotenv_and_any_variable_works(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("SWITCHBOARD_LARGE_URL=https://from-file/v1\nOPERATOR_OWN_KEY=from-file\n")
    monkeypatch.setenv("SWITCHBOARD_LARGE_URL", "https://from-env/v1")
    env = Settings(_env_file=env_file).operator_env()  # type: ignore[call-arg]
    assert env["SWITCHBOARD_LARGE_URL"] == "https://from-env/v1"
    assert env["OPERATOR_OWN_KEY"] == "from-file"  # an operator catalogue may name its own variables


def test_defaults_apply_when_nothing_is_set(clean_env: None) -> None:
    spec = load_catalogue(env=Settings(_env_file=None).operator_env()).get("large-endpoint")  # type: ignore[call-arg]
    assert spec.kind == "openai" and spec.base_url == "http://127.0.0.1:8000/v1"


def test_repr_masks_the_database_password() -> None:
    settings = Settings(_env_file=None, database_url="postgresql+asyncpg://bot:hunter2@db.internal/sb")  # type: ignore[call-arg]
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert "bot:***@db.internal" in repr(settings)
    assert settings.resolved_database_url.endswith("bot:hunter2@db.internal/sb")  # the real value still works


#: Every variable in README.md's configuration table, with a value and how the settings object shows it.
README_VARIABLES = [
    ("DISCORD_TOKEN", "tok-SENTINEL", lambda s: s.discord_token.get_secret_value(), "tok-SENTINEL"),
    ("SWITCHBOARD_DATABASE_URL", "sqlite+aiosqlite:////tmp/x.db", lambda s: s.database_url, None),
    ("SWITCHBOARD_LARGE_URL", "https://h/v1", lambda s: s.large_url, None),
    ("SWITCHBOARD_LARGE_MODEL", "org/model", lambda s: s.large_model, None),
    ("SWITCHBOARD_LARGE_API_KEY", "sk-1", lambda s: s.large_api_key.get_secret_value(), None),
    ("SWITCHBOARD_SECRET_KEY", "a long operator secret", lambda s: s.secret_key.get_secret_value(), None),
    ("SWITCHBOARD_CATALOGUE_PATH", "/etc/sb/models.yaml", lambda s: str(s.catalogue_path), None),
    ("SWITCHBOARD_ROUTING_PATH", "/etc/sb/routing.yaml", lambda s: str(s.routing_path), None),
    ("SWITCHBOARD_DEV_GUILD_ID", "123", lambda s: s.dev_guild_id, 123),
    (
        "SWITCHBOARD_ALLOWED_ENDPOINT_HOSTS",
        "a.example, B.example",
        lambda s: s.allowed_endpoint_hosts,
        ("a.example", "b.example"),
    ),
    ("SWITCHBOARD_ALLOW_PRIVATE_ENDPOINTS", "true", lambda s: s.allow_private_endpoints, True),
    ("SWITCHBOARD_ALLOW_DMS", "false", lambda s: s.allow_dms, False),
    ("SWITCHBOARD_MAX_REPLY_MESSAGES", "6", lambda s: s.max_reply_messages, 6),
    ("SWITCHBOARD_SERVE_API_KEY", "sk-serve", lambda s: s.serve_api_key.get_secret_value(), None),
    ("SWITCHBOARD_SHARD_COUNT", "4", lambda s: s.shard_count, 4),
    ("SWITCHBOARD_SHARED_RATE_LIMITS", "true", lambda s: s.uses_shared_rate_limits, True),
]


@pytest.mark.parametrize(("name", "value", "read", "expected"), README_VARIABLES, ids=[v[0] for v in README_VARIABLES])
@pytest.mark.parametrize("source", ["environment", ".env"])
def test_every_documented_variable_works_from_dotenv_as_from_the_environment(
    name: str, value: str, read: object, expected: object, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for other, *_ in README_VARIABLES:
        monkeypatch.delenv(other, raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text(f"{name}={value}\n" if source == ".env" else "")
    if source == "environment":
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert read(settings) == (value if expected is None else expected)  # type: ignore[operator]


def test_readme_documents_every_variable_tested_here() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    for name, *_ in README_VARIABLES:
        assert f"`{name}`" in table, name


@pytest.mark.parametrize("value", ["1,3", "[1, 3]", " 1 , 3 "])
@pytest.mark.parametrize("source", ["environment", ".env"])
def test_shard_ids_work_from_dotenv_as_from_the_environment(
    value: str, source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not in README_VARIABLES: shard ids only mean something with a shard count, so both are set here.
    for name in ("SWITCHBOARD_SHARD_IDS", "SWITCHBOARD_SHARD_COUNT"):
        monkeypatch.delenv(name, raising=False)
    lines = {"SWITCHBOARD_SHARD_IDS": value, "SWITCHBOARD_SHARD_COUNT": "4"}
    env_file = tmp_path / ".env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in lines.items()) if source == ".env" else "")
    if source == "environment":
        for k, v in lines.items():
            monkeypatch.setenv(k, v)
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert (settings.shard_ids, settings.shard_count) == ((1, 3), 4)
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    assert "`SWITCHBOARD_SHARD_IDS`" in readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"shard_ids": "0"}, "needs SWITCHBOARD_SHARD_COUNT"),
        ({"shard_ids": "0,2", "shard_count": 2}, "from 0 to 1"),
        ({"shard_ids": "[]", "shard_count": 2}, "from 0 to 1"),
        ({"shard_count": 0}, "greater than or equal to 1"),
    ],
)
def test_a_shard_range_that_cannot_work_is_refused_at_start_up(values: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_all_shards_and_in_memory_buckets_by_default_shared_buckets_on_postgresql(clean_env: None) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.shard_count, settings.shard_ids, settings.uses_shared_rate_limits) == (None, None, False)
    pg = Settings(_env_file=None, database_url="postgresql+asyncpg://bot@db/sb")  # type: ignore[call-arg]
    assert pg.uses_shared_rate_limits
