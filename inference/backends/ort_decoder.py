"""The small tier's decoder on a plain ONNX Runtime session: batched prefill and decode over a KV cache we hold.

The genai export (``inference.build.export``) is a decoder graph with GroupQueryAttention: inputs ``input_ids``,
``attention_mask`` and ``past_key_values.N.key/value``; outputs ``logits`` and ``present.N.key/value``.
GroupQueryAttention reads each row's length from its attention mask and writes a row's new keys right after its
own last valid one, so rows of different lengths share one right-padded cache: prompts of different lengths
prefill as one batch, and rows join and leave between steps (continuous batching, ``inference.backends.batching``).
Greedy answers are the same as one request at a time (tests/integration/test_batching_real.py).

Two changes to how the graph runs, made in memory when the session is built (nothing is written to the cache):

- the LM head runs on each row's last position only (a ``last_index`` input and a GatherND before the head):
  over a prompt the head would otherwise cost a fifth of the prefill and a [batch, length, vocabulary] output;
- ONNX Runtime's ``session.run`` releases the GIL, unlike onnxruntime-genai's ``generate_next_token``, so the
  event loop and the streams' threads keep running while the model computes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_PAST = "past_key_values."
_PRESENT = "present."
_LAST = "last_index"


class GraphNotSupported(Exception):
    """The export is not a decoder graph this module knows how to run (the caller uses onnxruntime-genai)."""


@dataclass
class KVBatch:
    """The KV cache of the rows decoding together: arrays [rows, kv heads, capacity, head dim], right-padded."""

    arrays: list[np.ndarray]
    #: Valid cache positions of each row (its prompt plus what it generated so far).
    lengths: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def capacity(self) -> int:
        return int(self.arrays[0].shape[2])


class OrtDecoder:
    """Runs a genai decoder export on ONNX Runtime (CPU), a batch of rows at a time."""

    def __init__(self, export: Path, *, threads: int = 0) -> None:
        import onnxruntime as ort

        model_bytes = last_position_graph(export / "model.onnx")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # The graph comes from memory: tell ONNX Runtime where its external weights are.
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", str(export))
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        inputs = {i.name: i for i in self.session.get_inputs()}
        self._past = [name for name in inputs if name.startswith(_PAST)]
        if not self._past or "attention_mask" not in inputs or _LAST not in inputs:
            raise GraphNotSupported(f"{export}: not a decoder graph with past_key_values inputs")
        self._present = [_PRESENT + name[len(_PAST) :] for name in self._past]
        self._outputs = ["logits", *self._present]
        shape = inputs[self._past[0]].shape  # [batch, kv heads, past length, head dim]
        self._kv_heads, self._head_dim = int(shape[1]), int(shape[3])
        self._kv_dtype = np.float16 if "float16" in inputs[self._past[0]].type else np.float32
        self.prefixes = PrefixCache()

    def prefill(self, prompts: list[list[int]]) -> tuple[np.ndarray, KVBatch]:
        """Run prompts: the logits of each one's last position [rows, vocab], and their cache.

        A prompt that begins like one seen recently (its task's system prompt, the conversation so far, the same
        document) runs only the rest, on the stored cache of that beginning; so do prompts of this batch that
        begin alike, once their shared beginning has run. The others run together, right-padded.
        """
        hits = [self.prefixes.longest(prompt) for prompt in prompts]
        self._share_beginnings(prompts, hits)
        plain = [i for i, hit in enumerate(hits) if hit is None]
        rows: dict[int, tuple[list[np.ndarray], int]] = {}  # prompt -> its cache (one row), its length
        logits = np.empty((len(prompts), 0), dtype=np.float32)
        if plain:
            plain_logits, batch = self._prefill_plain([prompts[i] for i in plain])
            logits = np.empty((len(prompts), plain_logits.shape[-1]), dtype=plain_logits.dtype)
            for j, i in enumerate(plain):
                logits[i] = plain_logits[j]
                rows[i] = ([a[j : j + 1] for a in batch.arrays], len(prompts[i]))
        for i, hit in enumerate(hits):
            if hit is not None:
                row_logits, arrays = self._prefill_after(hit, prompts[i][hit.length :])
                if logits.shape[1] == 0:
                    logits = np.empty((len(prompts), row_logits.shape[-1]), dtype=row_logits.dtype)
                logits[i] = row_logits[0]
                rows[i] = (arrays, len(prompts[i]))
        batch = _stack([rows[i] for i in range(len(prompts))])
        for i, prompt in enumerate(prompts):
            self.prefixes.store(prompt, [a[i : i + 1] for a in batch.arrays])
        return logits, batch

    def _share_beginnings(self, prompts: list[list[int]], hits: list[Prefix | None]) -> None:
        """Prompts of this batch without a stored beginning that begin alike: run that beginning once, first."""
        least = self.prefixes.min_length
        alike: dict[tuple[int, ...], list[int]] = {}
        for i, hit in enumerate(hits):
            if hit is None and len(prompts[i]) > least:
                alike.setdefault(tuple(prompts[i][:least]), []).append(i)
        for members in alike.values():
            if len(members) < 2:
                continue
            first = prompts[members[0]]
            shared = min(min(_common(first, prompts[i]) for i in members[1:]), *(len(prompts[i]) - 1 for i in members))
            if shared < least:
                continue
            _, batch = self._prefill_plain([first[:shared]])
            self.prefixes.store(first[:shared], batch.arrays)
            for i in members:
                hits[i] = self.prefixes.longest(prompts[i])

    def _prefill_after(self, prefix: Prefix, suffix: list[int]) -> tuple[np.ndarray, list[np.ndarray]]:
        """One prompt's rest on its beginning's cache (ONNX Runtime's attention takes one row when given a past)."""
        total = prefix.length + len(suffix)
        ids = np.asarray([suffix], dtype=np.int64)
        mask = np.ones((1, total), dtype=np.int64)
        return self._run(ids, mask, prefix.arrays, np.array([len(suffix) - 1], dtype=np.int64))

    def _prefill_plain(self, prompts: list[list[int]]) -> tuple[np.ndarray, KVBatch]:
        rows, width = len(prompts), max(len(p) for p in prompts)
        lengths = np.array([len(p) for p in prompts], dtype=np.int64)
        ids = np.zeros((rows, width), dtype=np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt)] = prompt
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        empty = np.zeros((rows, self._kv_heads, 0, self._head_dim), dtype=self._kv_dtype)
        logits, arrays = self._run(ids, mask, [empty] * len(self._past), lengths - 1)
        return logits, KVBatch(arrays, lengths)

    def step(self, batch: KVBatch, tokens: list[int]) -> tuple[np.ndarray, KVBatch]:
        """One new token per row: the next logits [rows, vocab] and the grown cache."""
        ids = np.asarray(tokens, dtype=np.int64)[:, None]
        # Each row's valid past plus its new token; GroupQueryAttention writes that token at the row's own length.
        mask = (np.arange(batch.capacity + 1)[None, :] <= batch.lengths[:, None]).astype(np.int64)
        logits, arrays = self._run(ids, mask, batch.arrays, np.zeros(batch.rows, dtype=np.int64))
        return logits, KVBatch(arrays, batch.lengths + 1)

    def select(self, batch: KVBatch, keep: list[int]) -> KVBatch | None:
        """The rows ``keep`` of ``batch`` (None for none), the cache cut to the longest of them."""
        if not keep:
            return None
        lengths = batch.lengths[keep]
        used = int(lengths.max())
        index = np.asarray(keep)
        return KVBatch([np.ascontiguousarray(a[index, :, :used]) for a in batch.arrays], lengths)

    def join(self, first: KVBatch | None, second: KVBatch) -> KVBatch:
        """Both batches' rows in one (first's, then second's), padded to the larger capacity."""
        if first is None:
            return second
        capacity = max(first.capacity, second.capacity)
        arrays = []
        for a, b in zip(first.arrays, second.arrays, strict=True):
            out = np.zeros((a.shape[0] + b.shape[0], a.shape[1], capacity, a.shape[3]), dtype=a.dtype)
            out[: a.shape[0], :, : a.shape[2]] = a
            out[a.shape[0] :, :, : b.shape[2]] = b
            arrays.append(out)
        return KVBatch(arrays, np.concatenate([first.lengths, second.lengths]))

    def _run(
        self, ids: np.ndarray, mask: np.ndarray, past: list[np.ndarray], last: np.ndarray
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        feed: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, _LAST: last[:, None]}
        feed.update(zip(self._past, past, strict=True))
        logits, *present = self.session.run(self._outputs, feed)
        return logits[:, -1, :], present


@dataclass
class Prefix:
    """The beginning of a stored prompt, and its cache: [1, kv heads, length, head dim] per past input."""

    length: int
    arrays: list[np.ndarray]


class PrefixCache:
    """The caches of recent prompts, to reuse for the next prompts that begin the same way (most recent last).

    Any beginning of a stored prompt serves: the next turn of a conversation finds the last one, a request of the
    same task finds its system prompt. Only beginnings of at least ``min_length`` tokens are used (a shorter one
    costs more as a separate model run than it saves). At most ``max_tokens`` positions are kept in all: for
    SmolLM2-135M (30 layers, 3 KV heads of 64, fp32) a position is 45 kB, so the default holds at most ~190 MB.
    """

    def __init__(self, *, max_tokens: int = 4096, min_length: int = 24) -> None:
        self.max_tokens, self.min_length = max_tokens, min_length
        self._entries: OrderedDict[tuple[int, ...], list[np.ndarray]] = OrderedDict()
        self._tokens = 0
        #: Prompts that began with a stored beginning (benchmarks and tests read it).
        self.hits = 0

    @property
    def tokens(self) -> int:
        """Positions stored."""
        return self._tokens

    def longest(self, prompt: list[int]) -> Prefix | None:
        """The longest stored beginning of ``prompt`` that leaves at least one of its tokens to run."""
        best, length = None, self.min_length - 1
        for tokens in self._entries:
            n = min(_common(prompt, tokens), len(prompt) - 1)
            if n > length:
                best, length = tokens, n
        if best is None:
            return None
        self._entries.move_to_end(best)
        self.hits += 1
        return Prefix(length, [np.ascontiguousarray(a[:, :, :length]) for a in self._entries[best]])

    def store(self, prompt: list[int], arrays: list[np.ndarray]) -> None:
        """Keep ``prompt``'s cache (``arrays``: one row, at least as long as the prompt)."""
        key = tuple(prompt)
        if len(key) < self.min_length or len(key) > self.max_tokens:
            return
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        self._entries[key] = [np.ascontiguousarray(a[:, :, : len(key)]) for a in arrays]
        self._tokens += len(key)
        while self._tokens > self.max_tokens:
            evicted, _ = self._entries.popitem(last=False)
            self._tokens -= len(evicted)


def _common(a: list[int], b: tuple[int, ...] | list[int]) -> int:
    """How many tokens ``a`` and ``b`` share from the start."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(differ[0]) if len(differ) else n


def _stack(rows: list[tuple[list[np.ndarray], int]]) -> KVBatch:
    """One batch of single-row caches (each [1, heads, >= its length, dim]), right-padded to the longest."""
    capacity = max(arrays[0].shape[2] for arrays, _ in rows)
    stacked = []
    for layer in range(len(rows[0][0])):
        first = rows[0][0][layer]
        out = np.zeros((len(rows), first.shape[1], capacity, first.shape[3]), dtype=first.dtype)
        for r, (arrays, _) in enumerate(rows):
            out[r, :, : arrays[layer].shape[2]] = arrays[layer][0]
        stacked.append(out)
    return KVBatch(stacked, np.array([length for _, length in rows], dtype=np.int64))


def last_position_graph(model_path: Path) -> bytes:
    """The export's graph with a ``last_index`` [batch, 1] input: the LM head sees only that position per row.

    The weights stay in the export's external data file; only the graph (a few hundred kB) is read and changed.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    nodes = list(graph.node)
    heads = [n for n in nodes if n.name.startswith("/lm_head/") and n.op_type in ("MatMul", "MatMulNBits")]
    if not heads or "logits" not in {o.name for o in graph.output}:
        raise GraphNotSupported(f"{model_path}: no /lm_head MatMul feeding a logits output")
    hidden = heads[0].input[0]  # the final norm's output, [batch, sequence, hidden]
    gathered, picked = "/last_position/hidden", "/last_position/picked"
    consumers = [n for n in nodes if hidden in n.input]
    for node in consumers:  # the head, and the exact head's rescoring (inference.build.export)
        for i, name in enumerate(node.input):
            if name == hidden:
                node.input[i] = gathered
    graph.input.append(helper.make_tensor_value_info(_LAST, TensorProto.INT64, ["batch_size", 1]))
    graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "/last_position/axis"))
    at = min(nodes.index(n) for n in consumers)
    nodes[at:at] = [
        helper.make_node("GatherND", [hidden, _LAST], [picked], batch_dims=1, name="/last_position/GatherND"),
        helper.make_node("Unsqueeze", [picked, "/last_position/axis"], [gathered], name="/last_position/Unsqueeze"),
    ]
    del graph.node[:]
    graph.node.extend(nodes)
    return bytes(model.SerializeToString())
