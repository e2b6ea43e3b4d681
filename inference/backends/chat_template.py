"""Prompt building and streaming text helpers shared by the local backends (ONNX Runtime, PyTorch).

Both local backends encode with the *transformers* tokenizer: onnxruntime-genai's own tokenizer
mis-decodes the GGUF-derived SmolLM2 ``tokenizer.json`` (byte markers, off-topic answers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from inference.types import ChatMessage, GenerationParams

log = logging.getLogger(__name__)

FinishReason = Literal["eos", "length", "stop_string", "cancelled", "error"]


@dataclass(slots=True)
class GenerationStats:
    """What the last generation on a backend did (read by tests, logs and benchmarks)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    finish_reason: FinishReason | None = None


def render_prompt(tokenizer: Any, messages: Sequence[ChatMessage], *, raw: bool = False) -> str:
    """The conversation as the model's chat template renders it, ending with the assistant prefix.

    ``raw``: no template at all, the messages' contents joined by blank lines (a text to continue).
    """
    if raw:
        return raw_prompt(messages)
    convo = [{"role": m.role, "content": m.content} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(convo, add_generation_prompt=True, tokenize=False))
    # A base model without a template: a plain transcript is the least surprising fallback.
    lines = [f"{m.role}: {m.content}" for m in messages]
    return "\n".join([*lines, "assistant:"])


def raw_prompt(messages: Sequence[ChatMessage]) -> str:
    """The messages' contents as one text to continue (completion on a base model: no roles, no template)."""
    return "\n\n".join(m.content for m in messages if m.content)


def encode_prompt(
    tokenizer: Any, messages: Sequence[ChatMessage], *, max_prompt_tokens: int, raw: bool = False
) -> list[int]:
    """Token ids of the rendered prompt, keeping the most recent ``max_prompt_tokens``.

    ``add_special_tokens=False``: the template already holds the special tokens, and the SmolLM2
    tokenizer has ``add_bos_token`` set, which would put a second ``<|im_start|>`` in front.
    """
    text = render_prompt(tokenizer, messages, raw=raw)
    ids: list[int] = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if len(ids) > max_prompt_tokens:
        # The conversation trimmer upstream should have done this; cutting the oldest tokens beats failing.
        log.warning("prompt of %d tokens cut to the last %d", len(ids), max_prompt_tokens)
        ids = ids[-max_prompt_tokens:]
    return ids


def budget(context_window: int, params: GenerationParams) -> tuple[int, int]:
    """(max prompt tokens, max new tokens) that together fit the context window."""
    max_new = max(1, min(params.max_new_tokens, context_window // 2))
    return context_window - max_new, max_new


def eos_token_ids(tokenizer: Any, generation_config: Any = None) -> set[int]:
    """Every id that ends an answer: the model's EOS (SmolLM2: ``<|im_end|>``) and the tokenizer's.

    The GGUF-derived SmolLM2 tokenizer names ``<|im_start|>`` as its EOS; the model starting a new
    turn also means its answer is over.
    """
    ids: set[int] = set()
    for value in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, Iterable):
            ids.update(int(v) for v in value)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    return ids


class IncrementalDecoder:
    """Turns token ids into text pieces one token at a time.

    Decoding each token alone loses leading spaces (sentencepiece) and splits multi-byte characters;
    this decodes a short window of recent tokens and emits only the new, complete text (the scheme
    text-generation-inference uses).
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the window decoded for context
        self._read = 0  # tokens already turned into emitted text

    def _decode(self, ids: list[int]) -> str:
        return str(self._tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def push(self, token_id: int) -> str:
        self._ids.append(int(token_id))
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        # A trailing U+FFFD is half a character: wait for the rest of its bytes.
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is left (an incomplete character at the very end comes out as U+FFFD)."""
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        self._prefix = self._read = len(self._ids)
        return after[len(before) :] if len(after) > len(before) else ""


class StopStrings:
    """Cuts the output at the first stop string, holding back text that may be the start of one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False

    def push(self, piece: str) -> str:
        """The text that is safe to emit now; sets :attr:`stopped` when a stop string appeared."""
        if not self._stops:
            return piece
        text = self._pending + piece
        cuts = [i for i in (text.find(s) for s in self._stops) if i >= 0]
        if cuts:
            self.stopped = True
            self._pending = ""
            return text[: min(cuts)]
        hold = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    hold = max(hold, n)
                    break
        self._pending = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return "" if self.stopped else rest
