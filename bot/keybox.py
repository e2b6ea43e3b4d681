"""Encryption at rest for the API keys server admins give for their own endpoints.

AES-GCM (the ``cryptography`` package) with a key from the operator's settings. Each key is sealed with its
server's id and the model's name as associated data, so a sealed key copied to another server's row (or
another model's) does not open: a server's key is usable only for that server's endpoint.
"""

from __future__ import annotations

import base64
import logging
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

_NONCE = 12
_INFO = b"switchboard endpoint keys v1"


class KeyBox:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the secret key must be at least 16 bytes")
        # HKDF: any operator-chosen string becomes a uniform 256-bit key.
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "KeyBox(***)"

    @classmethod
    def from_secret_or_file(cls, secret: str | None, key_file: Path) -> KeyBox:
        """The operator's secret if set; else a random one generated once into ``key_file`` (mode 0600)."""
        if secret:
            return cls(secret.encode())
        try:
            return cls(base64.b64decode(key_file.read_bytes().strip(), validate=True))
        except FileNotFoundError:
            pass
        key_file.parent.mkdir(parents=True, exist_ok=True)
        raw = os.urandom(32)
        # O_EXCL: two processes starting together do not overwrite each other's key.
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(raw) + b"\n")
        log.info("generated a new key for server endpoint keys in %s", key_file)
        return cls(raw)

    @staticmethod
    def _context(guild_id: int, name: str) -> bytes:
        return f"guild:{guild_id}\x00model:{name}".encode()

    def seal(self, guild_id: int, name: str, plaintext: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), self._context(guild_id, name))

    def open(self, guild_id: int, name: str, sealed: bytes) -> str | None:
        """The key, or None when it does not open here (another server's, another secret, damaged)."""
        try:
            plain = self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], self._context(guild_id, name))
        except (InvalidTag, ValueError):
            log.warning("guild %s: the stored key of model %r cannot be decrypted; set it again", guild_id, name)
            return None
        return plain.decode()
