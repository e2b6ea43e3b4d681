"""The small tier's decoder on a plain ONNX Runtime session: batched prefill and decode over a KV cache we hold.

The genai export (``inference.build.export``) is a decoder graph with GroupQueryAttention: inputs ``input_ids``,
``attention_mask`` and ``past_key_values.N.key/value``; outputs ``logits`` and ``present.N.key/value``.
GroupQueryAttention reads each row's length from its attention mask and writes a row's new keys right after its
own last valid one, so rows of different lengths share one right-padded cache: prompts of different lengths
prefill as one batch, and rows join and leave between steps (continuous batching, ``inference.backends.batching``).
Greedy answers are the same as one request at a time (tests/integration/test_batching_real.py).

How it runs:

- the LM head runs on each row's last position only (a ``last_index`` input and a GatherND before the head, added
  to the graph in memory when the session is built; nothing is written to the cache): over a prompt the head
  would otherwise cost a fifth of the prefill and a [batch, length, vocabulary] output;
- prompts that continue one stored beginning (a burst of requests behind their task's system prompt) run in one
  model run, one after another in a single row: GroupQueryAttention takes one row when given a past, and the
  ``position_ids`` and ``attention_bias`` inputs (also added in memory) put each at its own positions and hide
  the others from it;
- a decode step writes each row's new keys into the batch's cache buffers where they lie (the buffers are bound
  as both past input and present output), and the buffers are reused from batch to batch;
- ONNX Runtime's ``session.run`` releases the GIL, unlike onnxruntime-genai's ``generate_next_token``, so the
  event loop and the streams' threads keep running while the model computes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_PAST = "past_key_values."
_PRESENT = "present."
_LAST = "last_index"
_POSITIONS = "position_ids"
_BIAS = "attention_bias"


class GraphNotSupported(Exception):
    """The export is not a decoder graph this module knows how to run (the caller uses onnxruntime-genai)."""


#: Positions a cache buffer holds beyond its longest row: it is reallocated once every this many steps, not each one.
SLACK = 64
#: Free slots are kept for rows to join while a buffer holds at most this many positions per row of the batch:
#: a long conversation gets a buffer of its own size, not a full batch of its length.
SLOT_POSITIONS = 256
#: The most new tokens one run of prompts continuing one stored beginning holds (``OrtDecoder._prefill_folded``):
#: its attention bias is this many rows of the beginning plus this many columns.
FOLD_TOKENS = 512
#: How many tokens longer a prompt's stored beginning may be than the one it runs on with others (it runs them again).
FOLD_SLACK = 32


@dataclass
class KVBatch:
    """The KV cache of the rows decoding together, right-padded: a row's valid positions are its first ``lengths``.

    Per past input one buffer [slots, kv heads, capacity, head dim]; the rows are its first ``rows`` slots, so
    ``arrays`` (those slots) is contiguous and ONNX Runtime can read and write it where it lies. Free slots and
    capacity let rows join and grow without a new buffer.
    """

    buffers: list[np.ndarray]
    #: Valid cache positions of each row (its prompt plus what it generated so far).
    lengths: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def slots(self) -> int:
        return int(self.buffers[0].shape[0])

    @property
    def capacity(self) -> int:
        return int(self.buffers[0].shape[2])

    @property
    def arrays(self) -> list[np.ndarray]:
        """The rows' caches, [rows, kv heads, capacity, head dim] each (views of the buffers)."""
        return [b[: self.rows] for b in self.buffers]


class OrtDecoder:
    """Runs a genai decoder export on ONNX Runtime (CPU), a batch of rows at a time."""

    def __init__(self, export: Path, *, threads: int = 0, max_rows: int = 16) -> None:
        import onnxruntime as ort

        self._ort = ort
        #: Rows a batch's buffers are sized for (the batcher's batch): joining rows then needs no new buffer.
        self.max_rows = max_rows
        #: A batch's buffers that no longer hold one, reused by the next batch that fits them.
        self._spare: list[np.ndarray] | None = None

        model_bytes = decoder_graph(export / "model.onnx")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Its threads spin within a run, not after it: between two steps the worker thread, the streams and the
        # event loop need both cores (the gap between 16-row steps over HTTP fell from 2.1-2.8 ms to 1.4-1.9 ms).
        options.add_session_config_entry("session.force_spinning_stop", "1")
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

    def prefill(
        self, prompts: list[list[int]], ready: Callable[[int, np.ndarray], None] | None = None
    ) -> tuple[np.ndarray, KVBatch]:
        """Run prompts: the logits of each one's last position [rows, vocab], and their cache.

        A prompt that begins like one seen recently (its task's system prompt, the conversation so far, the same
        document) runs only the rest, on the stored cache of that beginning; so do prompts of this batch that
        begin alike, once their shared beginning has run. The others run together, right-padded. ``ready(i,
        logits)`` hears of each prompt as soon as it has run.
        """
        report = ready or (lambda i, logits: None)
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
                report(i, logits[i])
        for prefix, members in self._folds(prompts, hits):
            rests = [prompts[i][prefix.length :] for i in members]
            if len(members) == 1:
                fold_logits, cache = self._prefill_after(prefix, rests[0])
                caches = [cache]
            else:
                fold_logits, caches = self._prefill_folded(prefix, rests)
            if logits.shape[1] == 0:
                logits = np.empty((len(prompts), fold_logits.shape[-1]), dtype=fold_logits.dtype)
            for j, i in enumerate(members):
                logits[i] = fold_logits[j]
                rows[i] = (caches[j], len(prompts[i]))
                report(i, logits[i])
        batch = _stack([rows[i] for i in range(len(prompts))])
        for i, prompt in enumerate(prompts):  # a continued prompt's cache is its own: kept without a copy
            self.prefixes.store(prompt, rows[i][0], owned=hits[i] is not None)
        return logits, batch

    def _folds(self, prompts: list[list[int]], hits: list[Prefix | None]) -> list[tuple[Prefix, list[int]]]:
        """The prompts with a stored beginning, in the groups that run together, in order of arrival.

        A group continues one beginning. A prompt whose own stored beginning is at most ``FOLD_SLACK`` tokens longer
        than a group's joins it and runs those tokens again: cheaper than a run of its own, which is a whole pass
        over the weights (a conversation's long history keeps its own run). A run holds at most ``FOLD_TOKENS``
        new tokens.
        """
        groups: list[tuple[Prefix, list[int]]] = []
        found = sorted((hit.length, i) for i, hit in enumerate(hits) if hit is not None)
        for length, i in found:
            prompt = prompts[i]
            for prefix, members in groups:
                if (
                    length - prefix.length <= FOLD_SLACK
                    and prompt[: prefix.length] == prompts[members[0]][: prefix.length]
                ):
                    members.append(i)
                    break
            else:
                hit = hits[i]
                assert hit is not None
                groups.append((hit, [i]))
        runs: list[tuple[Prefix, list[int]]] = []
        for prefix, members in groups:
            run: list[int] = []
            size = 0
            for i in sorted(members):
                rest = len(prompts[i]) - prefix.length
                if run and size + rest > FOLD_TOKENS:
                    runs.append((prefix, run))
                    run, size = [], 0
                run.append(i)
                size += rest
            runs.append((prefix, run))
        return sorted(runs, key=lambda run: run[1][0])

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
        """One prompt's rest on its beginning's cache."""
        total = prefix.length + len(suffix)
        ids = np.asarray([suffix], dtype=np.int64)
        mask = np.ones((1, total), dtype=np.int64)
        positions = np.arange(prefix.length, total, dtype=np.int64)[None, :]
        logits, present = self._run(ids, mask, prefix.arrays, np.array([len(suffix) - 1]), positions)
        return logits[:, 0], present

    def _prefill_folded(self, prefix: Prefix, suffixes: list[list[int]]) -> tuple[np.ndarray, list[list[np.ndarray]]]:
        """Several prompts' rests on one beginning's cache, in one run: the logits of each one's last position
        [prompts, vocab], and each one's cache (one row: the beginning, then its rest).

        ONNX Runtime's GroupQueryAttention takes a single row when given a past, so the rests run one after another
        in that row, each at the positions it would have alone, and the attention bias hides the other rests from
        it. The matrix products then see all the rests' tokens at once: sixteen 17-token rests after a 60-token
        beginning take 402 ms this way against 579 ms one at a time (``python bench/batch_steps.py``). The logits
        are those of one at a time within float rounding, not bit for bit: a rest's attention also sums the other
        rests' hidden positions (as zeros), which changes the order of its additions.
        """
        p = prefix.length
        lengths = [len(s) for s in suffixes]
        ends = np.cumsum(lengths)
        starts = ends - lengths
        size = int(ends[-1])
        ids = np.asarray([[t for s in suffixes for t in s]], dtype=np.int64)
        mask = np.ones((1, p + size), dtype=np.int64)
        positions = np.concatenate([np.arange(p, p + n) for n in lengths], dtype=np.int64)[None, :]
        bias = np.full((1, 1, size, p + size), -np.inf, dtype=self._kv_dtype)
        bias[..., :p] = 0
        for start, n in zip(starts, lengths, strict=True):
            # each rest sees its own earlier tokens (the causal mask hides the later ones)
            bias[0, 0, start : start + n, p + start : p + start + n] = 0
        logits, present = self._run(ids, mask, prefix.arrays, ends - 1, positions, bias)
        caches = [
            [
                np.concatenate([a, b[:, :, p + start : p + end]], axis=2)
                for a, b in zip(prefix.arrays, present, strict=True)
            ]
            for start, end in zip(starts, ends, strict=True)
        ]
        return logits[0], caches

    def _prefill_plain(self, prompts: list[list[int]]) -> tuple[np.ndarray, KVBatch]:
        rows, width = len(prompts), max(len(p) for p in prompts)
        lengths = np.array([len(p) for p in prompts], dtype=np.int64)
        ids = np.zeros((rows, width), dtype=np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt)] = prompt
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        empty = np.zeros((rows, self._kv_heads, 0, self._head_dim), dtype=self._kv_dtype)
        positions = np.zeros((rows, width), dtype=np.int64)  # a first prompt: the attention counts from 0 itself
        logits, arrays = self._run(ids, mask, [empty] * len(self._past), lengths - 1, positions)
        return logits[:, 0], KVBatch(arrays, lengths)

    def step(self, batch: KVBatch, tokens: list[int]) -> tuple[np.ndarray, KVBatch]:
        """One new token per row: the next logits [rows, vocab]; the cache grows in place (``batch`` is reused).

        Each buffer is bound as both the past input and the present output, so GroupQueryAttention writes each
        row's new keys at the row's own length and reads the rest where they are (past_present_share_buffer).
        Returned as outputs instead, the whole cache would be copied every step into fresh memory one position
        longer (measured at 16 rows and 150 positions: 60 ms a step that way, 46.5 ms in place).
        """
        if batch.capacity <= int(batch.lengths.max()):
            batch = self._resized(batch, batch.rows)
        rows = batch.rows
        binding = self.session.io_binding()
        binding.bind_cpu_input("input_ids", np.asarray(tokens, dtype=np.int64)[:, None])
        # Mask width is the attention's total length: each row's valid past plus its new token.
        width = int(batch.lengths.max()) + 1
        binding.bind_cpu_input("attention_mask", (np.arange(width)[None, :] <= batch.lengths[:, None]).astype(np.int64))
        binding.bind_cpu_input(_LAST, np.zeros((rows, 1, 1), dtype=np.int64))
        binding.bind_cpu_input(_POSITIONS, batch.lengths[:, None].astype(np.int64))
        binding.bind_cpu_input(_BIAS, np.zeros((1, 1, 1, width), dtype=self._kv_dtype))
        binding.bind_output("logits")
        for past, present, array in zip(self._past, self._present, batch.arrays, strict=True):
            value = self._ort.OrtValue.ortvalue_from_numpy(array)
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        self.session.run_with_iobinding(binding)
        logits = binding.get_outputs()[0].numpy()
        batch.lengths = batch.lengths + 1
        return logits[:, 0, :], batch

    def select(self, batch: KVBatch, keep: list[int]) -> KVBatch | None:
        """The rows ``keep`` (ascending) of ``batch``, moved to its first slots in place (None for none)."""
        if not keep:
            self._keep_spare(batch.buffers)
            return None
        lengths = batch.lengths[keep]
        used = int(lengths.max())
        if batch.capacity > used + 4 * SLACK:  # the longest row left: give the memory back
            return self._resized(batch, len(keep), rows=keep)
        for slot, row in enumerate(keep):
            if slot != row:
                for buffer in batch.buffers:
                    buffer[slot, :, :used] = buffer[row, :, :used]
        return KVBatch(batch.buffers, lengths)

    def join(self, first: KVBatch | None, second: KVBatch) -> KVBatch:
        """Both batches' rows in one (first's, then second's): in first's free slots when they fit."""
        if first is None:
            return self._resized(second, second.rows)
        rows = first.rows + second.rows
        longest = int(max(first.lengths.max(), second.lengths.max()))
        if rows > first.slots or longest >= first.capacity:
            first = self._resized(first, rows, capacity=longest + 1 + SLACK)
        for buffer, new in zip(first.buffers, second.arrays, strict=True):
            width = min(new.shape[2], first.capacity)
            buffer[first.rows : rows, :, :width] = new[:, :, :width]
        return KVBatch(first.buffers, np.concatenate([first.lengths, second.lengths]))

    def warm_up(self, rows: int, length: int = 160) -> None:
        """Two decode steps of ``rows`` rows on a ``length``-position cache of zeros; its buffers stay as spare.

        ONNX Runtime's arena and the spare buffers then hold a full batch's memory (for SmolLM2-135M, 16 rows of
        225 positions: 166 MB), so the first burst of requests does not wait for the system to map it page by page.
        """
        zeros = [np.zeros((rows, self._kv_heads, length, self._head_dim), self._kv_dtype) for _ in self._past]
        batch = self.join(None, KVBatch(zeros, np.full(rows, length - 1, dtype=np.int64)))
        for _ in range(2):
            _, batch = self.step(batch, [0] * rows)
        self.select(batch, [])  # its buffers stay, for the first batch

    def _resized(
        self, batch: KVBatch, needed: int, *, rows: list[int] | None = None, capacity: int | None = None
    ) -> KVBatch:
        """``batch`` (its ``rows``, all by default) in other buffers, of at least ``needed`` slots, with room to
        grow: free slots for a full batch while its positions stay within ``SLOT_POSITIONS`` a row."""
        index = list(range(batch.rows)) if rows is None else rows
        lengths = batch.lengths[index]
        used = int(lengths.max())
        capacity = max(capacity or 0, used + 1 + SLACK)
        slots = max(needed, min(self.max_rows, self.max_rows * SLOT_POSITIONS // capacity))
        buffers = self._spare_buffers(slots, capacity)
        if buffers is None:
            first = batch.buffers[0]
            shape = (slots, first.shape[1], capacity, first.shape[3])
            buffers = [np.zeros(shape, dtype=first.dtype) for _ in batch.buffers]
        for out, buffer in zip(buffers, batch.buffers, strict=True):
            out[: len(index), :, :used] = buffer[index, :, :used]
        self._keep_spare(batch.buffers)
        return KVBatch(buffers, lengths)

    def _spare_buffers(self, slots: int, capacity: int) -> list[np.ndarray] | None:
        """The spare buffers, taken, if they hold ``slots`` rows of ``capacity`` positions without much more."""
        spare = self._spare
        if spare is None or spare[0].shape[0] < slots or not capacity <= spare[0].shape[2] <= capacity + 4 * SLACK:
            return None
        self._spare = None
        return spare

    def _keep_spare(self, buffers: list[np.ndarray]) -> None:
        """Keep a batch's buffers that are no longer used for the next batch: memory this process has touched.

        Fresh memory is mapped by the system one page fault at a time, which on a 2-core VM cost 200-480 ms
        for one batch's buffers (16 rows, 225 positions: 166 MB), against a few ms to reuse them. Only buffers with
        a full batch's slots and at most ``max_rows`` x ``SLOT_POSITIONS`` positions are kept.
        """
        slots, capacity = buffers[0].shape[0], buffers[0].shape[2]
        if slots >= self.max_rows and slots * capacity <= self.max_rows * SLOT_POSITIONS:
            self._spare = buffers

    def _run(
        self,
        ids: np.ndarray,
        mask: np.ndarray,
        past: list[np.ndarray],
        picks: np.ndarray,
        positions: np.ndarray,
        bias: np.ndarray | None = None,
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One model run: the logits at ``picks`` [rows, picks] (positions in ``ids``) and the present caches."""
        rows, length = ids.shape
        if bias is None:  # nothing hidden beyond the causal mask
            bias = np.zeros((1, 1, length, mask.shape[1]), dtype=self._kv_dtype)
        feed: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            _LAST: picks.reshape(rows, -1, 1),
            _POSITIONS: positions,
            _BIAS: bias,
        }
        feed.update(zip(self._past, past, strict=True))
        logits, *present = self.session.run(self._outputs, feed)
        return logits, present


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
        return Prefix(length, [a[:, :, :length] for a in self._entries[best]])  # views: a run copies them once

    def store(self, prompt: list[int], arrays: list[np.ndarray], *, owned: bool = False) -> None:
        """Keep ``prompt``'s cache (``arrays``: one row, at least as long as the prompt). ``owned``: the arrays are
        the prompt's alone, exactly its length, and nothing writes into them later; they are kept as they are."""
        key = tuple(prompt)
        if len(key) < self.min_length or len(key) > self.max_tokens:
            return
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        if owned and all(a.shape[2] == len(key) for a in arrays):
            self._entries[key] = arrays
        else:  # a copy: the arrays may be a batch's buffers, which later steps write into
            self._entries[key] = [a[:, :, : len(key)].copy() for a in arrays]
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


def decoder_graph(model_path: Path) -> bytes:
    """The export's graph with the inputs this decoder feeds besides the export's own (the weights stay in the
    export's external data file; only the graph, a few hundred kB, is read and changed):

    - ``last_index`` [batch, picks, 1]: the positions of each row the LM head sees (its last one, or the last one
      of each prompt folded into the row);
    - ``position_ids`` [batch, sequence] and ``attention_bias`` [1, 1, sequence, total], wired into every
      GroupQueryAttention: a row can then hold several prompts that continue one beginning, each at its own
      positions and seeing only the beginning and itself (:meth:`OrtDecoder._prefill_folded`).
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path), load_external_data=False)
    graph = model.graph
    nodes = list(graph.node)
    heads = [n for n in nodes if n.name.startswith("/lm_head/") and n.op_type in ("MatMul", "MatMulNBits")]
    if not heads or "logits" not in {o.name for o in graph.output}:
        raise GraphNotSupported(f"{model_path}: no /lm_head MatMul feeding a logits output")
    attention = [n for n in nodes if n.op_type == "GroupQueryAttention"]
    if not attention or not any(i.name.startswith(_PAST) for i in graph.input):
        raise GraphNotSupported(f"{model_path}: no GroupQueryAttention over past_key_values")
    hidden = heads[0].input[0]  # the final norm's output, [batch, sequence, hidden]
    gathered = "/last_position/hidden"
    consumers = [n for n in nodes if hidden in n.input]
    for node in consumers:  # the head, and the exact head's rescoring (inference.build.export)
        for i, name in enumerate(node.input):
            if name == hidden:
                node.input[i] = gathered
    graph.input.append(helper.make_tensor_value_info(_LAST, TensorProto.INT64, ["batch_size", "picks", 1]))
    at = min(nodes.index(n) for n in consumers)
    nodes[at:at] = [
        helper.make_node("GatherND", [hidden, _LAST], [gathered], batch_dims=1, name="/last_position/GatherND")
    ]
    graph.input.append(helper.make_tensor_value_info(_POSITIONS, TensorProto.INT64, ["batch_size", "sequence_length"]))
    past = next(i for i in graph.input if i.name.startswith(_PAST))  # the bias has the attention's float type
    bias_type = past.type.tensor_type.elem_type or TensorProto.FLOAT
    graph.input.append(
        helper.make_tensor_value_info(_BIAS, bias_type, [1, 1, "sequence_length", "total_sequence_length"])
    )
    for node in attention:  # inputs 9 and 10 of GroupQueryAttention: position_ids, attention_bias
        inputs = [*node.input, *[""] * (11 - len(node.input))]
        inputs[9], inputs[10] = _POSITIONS, _BIAS
        del node.input[:]
        node.input.extend(inputs)
    del graph.node[:]
    graph.node.extend(nodes)
    return bytes(model.SerializeToString())
