"""Server endpoints' keys at rest: sealed, bound to their server and model, the secret from settings or a file."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bot.keybox import KeyBox

KEY = "sk-server-SENTINEL-0123456789"


def test_a_sealed_key_opens_only_for_its_server_and_model() -> None:
    box = KeyBox(b"operator secret, at least 16 bytes")
    sealed = box.seal(1, "mine", KEY)
    assert KEY.encode() not in sealed
    assert box.open(1, "mine", sealed) == KEY
    # Copied to another server's row, or another model's: it does not open.
    assert box.open(2, "mine", sealed) is None
    assert box.open(1, "other", sealed) is None
    # Nor under another operator secret, nor damaged.
    assert KeyBox(b"another operator's secret!!").open(1, "mine", sealed) is None
    assert box.open(1, "mine", sealed[:-1] + bytes([sealed[-1] ^ 1])) is None
    assert box.open(1, "mine", b"short") is None
    # Two seals of the same key differ (random nonce).
    assert box.seal(1, "mine", KEY) != sealed
    assert repr(box) == "KeyBox(***)"


def test_without_a_configured_secret_one_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    key_file = tmp_path / "data" / "secret.key"
    first = KeyBox.from_secret_or_file(None, key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    sealed = first.seal(1, "m", KEY)
    # A restart reads the same file: keys sealed before still open.
    assert KeyBox.from_secret_or_file(None, key_file).open(1, "m", sealed) == KEY
    # A configured secret wins over the file.
    assert KeyBox.from_secret_or_file("a configured operator secret", key_file).open(1, "m", sealed) is None


def test_a_too_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        KeyBox(b"short")
