"""A deterministic stand-in for the MiniLM embedder: hashed bag of words, L2-normalised (no model needed)."""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

DIM = 384


class WordEmbedder:
    """Texts sharing words get similar vectors; texts with no word in common are orthogonal-ish."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, zlib.crc32(word.rstrip("s").encode()) % DIM] += 1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
        return out

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return self.embed(texts)
