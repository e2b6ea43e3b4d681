"""Sentence embeddings for the knowledge base: the packaged all-MiniLM-L6-v2 on ONNX Runtime, batched.

Run time needs only onnxruntime, tokenizers and numpy (no torch): the int8 export made at set-up time by
``inference.build.embedder`` (``python -m bot models prepare``), mean pooling over the attention mask and
L2 normalisation, so the dot product of two vectors is their cosine similarity. Batches are padded to their
longest text (texts sorted by length first, so padding stays small) and run off the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from inference.artifacts import PREPARE_COMMAND, embedder_dir
from inference.errors import ConfigError

DIMENSIONS = 384
#: MiniLM was trained on 256-token windows (its max_seq_length); longer text is truncated.
MAX_TOKENS = 256
BATCH_SIZE = 32


class Embedder:
    """``embed(texts) -> float32 array (n, 384)`` of unit vectors; thread-safe after construction."""

    dimensions = DIMENSIONS

    def __init__(self, directory: Path, *, threads: int = 2, batch_size: int = BATCH_SIZE) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model, tokenizer = directory / "model.onnx", directory / "tokenizer.json"
        if not model.exists() or not tokenizer.exists():
            raise ConfigError(f"the knowledge embedder is not prepared in {directory}: run `{PREPARE_COMMAND}` first")
        tok = Tokenizer.from_file(str(tokenizer))
        tok.enable_truncation(MAX_TOKENS)
        tok.no_padding()
        self._tok = tok
        self._pad_id = tok.token_to_id("[PAD]") or 0
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # Its threads stop spinning when a run ends: a query is embedded just before the small tier prefills on
        # the same cores (as the task classifier's, inference/classifier/encoder.py).
        so.add_session_config_entry("session.force_spinning_stop", "1")
        self._session = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
        self._inputs = {i.name for i in self._session.get_inputs()}
        self.batch_size = batch_size
        # One batch at a time: onnxruntime already uses the threads it was given.
        self._lock = threading.Lock()

    @classmethod
    def load(cls, cache_dir: Path) -> Embedder:
        return cls(embedder_dir(cache_dir))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tok.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = self._run([encodings[i].ids for i in idx])
        return out

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        with self._lock:
            hidden = self._session.run(None, feed)[0]  # (batch, seq, 384)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    async def aembed(self, texts: Sequence[str]) -> np.ndarray:
        """:meth:`embed` in a worker thread, so indexing never blocks the event loop."""
        return await asyncio.to_thread(self.embed, texts)
