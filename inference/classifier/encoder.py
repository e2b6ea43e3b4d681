"""Sentence embeddings from the int8 ONNX MiniLM, with no torch/transformers import.

Run-time path of the task classifier: a plain ``onnxruntime.InferenceSession`` plus the ``tokenizers``
fast tokenizer and numpy mean pooling. Importing torch costs about 3 s and 400 MB, which a router that
answers in milliseconds cannot afford at cold start.

Thread safety: after construction nothing is mutated; ``InferenceSession.run`` and ``Tokenizer.encode``
are safe to call from several threads at once.

Providers: CUDA first when an NVIDIA driver is present, then CPU; the one in use is logged. The model is
int8 dynamic-quantized for CPU; on a GPU onnxruntime may still place its int8 matmul kernels on the CPU.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

log = logging.getLogger(__name__)

#: Content tokens fed to the encoder (the artifact's meta.json sets the value used). Cost is linear in
#: length (~0.07 ms/token for the 4-layer int8 model on one core), so long requests keep their head and
#: tail only: the head usually says what is wanted, the tail often holds the instruction after a paste.
DEFAULT_MAX_TOKENS = 64
_TAIL_SHARE = 0.25


def window_ids(ids: list[int], max_tokens: int, cls_id: int, sep_id: int) -> list[int]:
    """[CLS] + head + tail + [SEP] with at most ``max_tokens`` content tokens (training uses it too)."""
    if len(ids) > max_tokens:
        tail = int(max_tokens * _TAIL_SHARE)
        ids = ids[: max_tokens - tail] + ids[len(ids) - tail :]
    return [cls_id, *ids, sep_id]


def _gpu_present() -> bool:
    # onnxruntime-gpu lists CUDA even on CPU-only machines, and asking for it there logs an error,
    # so look for the NVIDIA driver before asking.
    return os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")


def default_providers() -> list[str]:
    available = ort.get_available_providers()
    providers = []
    if "CUDAExecutionProvider" in available and _gpu_present():
        providers.append("CUDAExecutionProvider")
    providers.append("CPUExecutionProvider")
    return providers


class OnnxEncoder:
    """Mean-pooled, L2-normalised MiniLM embeddings for one text at a time."""

    def __init__(
        self,
        model_path: Path,
        tokenizer_path: Path,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        threads: int = 1,
        providers: list[str] | None = None,
    ) -> None:
        self.max_tokens = max_tokens
        self.threads = threads
        tok = Tokenizer.from_file(str(tokenizer_path))
        # We add [CLS]/[SEP] and truncate ourselves so that prompt_tokens counts the whole text.
        tok.no_truncation()
        tok.no_padding()
        self._tok = tok
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:
            raise ValueError(f"{tokenizer_path} is not a BERT WordPiece tokenizer ([CLS]/[SEP] missing)")
        self._cls, self._sep = cls_id, sep_id

        so = ort.SessionOptions()
        # Spinning only pays with a second thread (measured: 2 spinning threads 1.6 ms median vs 2.3 ms
        # with one on 2 cores); a single thread never spins, so it cannot steal the generator's core.
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0" if threads == 1 else "1")
        # ...but only during a run: left spinning after it, the second thread held a core while the request it
        # had just routed was prefilled on the small tier (one client's first token 93-100 ms instead of 52-57 ms
        # over HTTP, bench/concurrency.py); routing itself is no slower (bench/routing.py).
        so.add_session_config_entry("session.force_spinning_stop", "1")
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_path), so, providers=providers or default_providers())
        self.provider: str = self.session.get_providers()[0]
        self._input_names = {i.name for i in self.session.get_inputs()}
        log.info("classifier encoder on %s (%s)", self.provider, Path(model_path).name)

    def token_ids(self, text: str) -> list[int]:
        """Content token ids of ``text`` (no special tokens), untruncated."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def window(self, ids: list[int]) -> list[int]:
        """[CLS] + head + tail + [SEP], at most ``max_tokens`` content tokens."""
        return window_ids(ids, self.max_tokens, self._cls, self._sep)

    def embed_ids(self, ids: list[int]) -> np.ndarray:
        arr = np.asarray([self.window(ids)], dtype=np.int64)
        feed = {"input_ids": arr, "attention_mask": np.ones_like(arr)}
        if "token_type_ids" in self._input_names:
            feed["token_type_ids"] = np.zeros_like(arr)
        hidden = self.session.run(None, feed)[0][0]  # (seq, 384); batch 1 has no padding to mask
        vec = hidden.mean(axis=0)
        return vec / max(float(np.linalg.norm(vec)), 1e-12)

    def embed(self, text: str) -> tuple[np.ndarray, int]:
        """(embedding, number of content tokens in the whole text)."""
        ids = self.token_ids(text)
        return self.embed_ids(ids), len(ids)
