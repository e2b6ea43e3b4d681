"""Guided decoding for the local backends: a :class:`~inference.types.Constraint` as a token mask.

One engine, llguidance, on every local runtime, so all of them accept the same schemas and fail the same way:

- transformers ``generate`` (PyTorch, and optimum's ONNX Runtime wrapper) gets :class:`GuidanceProcessor`, a
  logits processor;
- onnxruntime-genai gets :class:`GenaiGuide`, which masks the logits between ``get_logits`` and
  ``set_logits``. genai's own ``GeneratorParams.set_guidance`` (llguidance inside) works too, but rebuilds its
  view of the vocabulary for every request: about 245 ms a request on SmolLM2's 49k tokens, against a few ms
  here with the view built once per backend (README, "Structured output").

A choice is a regular expression of the escaped labels. Why llguidance rather than xgrammar or
lm-format-enforcer: README, "Structured output".
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inference.structured import SchemaError, choice_regex, decoding_schema
from inference.types import Constraint

if TYPE_CHECKING:
    import numpy as np
    import torch


#: llguidance's JSON options: one compact layout (``{"a":1,"b":[2,3]}``). Flexible whitespace would let a
#: small model spend its whole token budget on blank lines inside a document that then never closes. (With
#: a ": " key separator llguidance 1.9.1 masked SmolLM2's tokens wrongly after a key; compact is fine.)
JSON_LAYOUT: dict[str, Any] = {"whitespace_flexible": False}


def llguidance_grammar(constraint: Constraint) -> str:
    """The constraint as an llguidance grammar (what :class:`GuidanceProcessor` enforces)."""
    from llguidance import LLMatcher

    if constraint.kind == "json_schema":
        schema = decoding_schema(constraint.schema or {})
        return str(LLMatcher.grammar_from_json_schema(schema, overrides=JSON_LAYOUT))  # type: ignore[arg-type]
    if constraint.kind == "regex":
        return str(LLMatcher.grammar_from_regex(constraint.pattern or ""))
    return str(LLMatcher.grammar_from_regex(choice_regex(constraint.choices)))


class GuidanceTokenizers:
    """llguidance's view of a transformers tokenizer, built once per backend (it walks the whole vocabulary)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: dict[int, Any] = {}

    def get(self, tokenizer: Any, *, n_vocab: int, eos_ids: Sequence[int]) -> Any:
        with self._lock:
            if n_vocab not in self._built:
                self._built[n_vocab] = _ll_tokenizer(tokenizer, n_vocab=n_vocab, eos_ids=sorted(eos_ids))
            return self._built[n_vocab]


def _ll_tokenizer(tokenizer: Any, *, n_vocab: int, eos_ids: list[int]) -> Any:
    """From the fast tokenizer's own JSON: llguidance then reads the vocabulary natively. Its Python
    wrapper (``llguidance.hf``) works for any tokenizer but made SmolLM2's first mask take seconds.
    The EOS ids are the model's own (SmolLM2's tokenizer names <|im_start|> as its EOS)."""
    import llguidance

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        plain_byte_level_decoder(spec)
        return llguidance.LLTokenizer(json.dumps(spec), n_vocab=n_vocab, eos_token=eos_ids)
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer, n_vocab, eos_token=eos_ids)


def guidance_matcher(
    tokenizers: GuidanceTokenizers, tokenizer: Any, constraint: Constraint, *, n_vocab: int, eos_ids: Sequence[int]
) -> Any:
    """An llguidance matcher for one answer under ``constraint``; :class:`SchemaError` if llguidance refuses it."""
    from llguidance import LLMatcher

    ll_tokenizer = tokenizers.get(tokenizer, n_vocab=n_vocab, eos_ids=eos_ids)
    grammar = llguidance_grammar(constraint)
    problem = LLMatcher.validate_grammar(grammar, ll_tokenizer)
    if problem:
        raise SchemaError(f"guided decoding cannot enforce this constraint: {problem}")
    return LLMatcher(ll_tokenizer, grammar)


def guidance_processor(tokenizers: GuidanceTokenizers, tokenizer: Any, constraint: Constraint, *,
                       n_vocab: int, eos_ids: Sequence[int], prompt_len: int) -> GuidanceProcessor:  # fmt: skip
    """A logits processor enforcing ``constraint``; :class:`SchemaError` if llguidance refuses it."""
    matcher = guidance_matcher(tokenizers, tokenizer, constraint, n_vocab=n_vocab, eos_ids=eos_ids)
    return GuidanceProcessor(matcher, n_vocab=n_vocab, prompt_len=prompt_len)


class GuidanceProcessor:
    """A transformers ``LogitsProcessor``: tokens the grammar forbids get -inf before each step.

    ``generate`` calls it with every sequence so far; the tokens added since the last call are fed to the
    matcher first. Batch size 1 (the local backends run one request at a time).
    """

    def __init__(self, matcher: Any, *, n_vocab: int, prompt_len: int) -> None:
        from llguidance.torch import allocate_token_bitmask

        self.matcher = matcher
        self._bitmask = allocate_token_bitmask(1, n_vocab)
        self._seen = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        from llguidance.torch import apply_token_bitmask_inplace, fill_next_token_bitmask

        new = input_ids[0, self._seen :].tolist()
        self._seen = input_ids.shape[1]
        if new and not self.matcher.consume_tokens(new):
            raise RuntimeError(f"guided decoding lost track of the output: {self.matcher.get_error()}")
        fill_next_token_bitmask(self.matcher, self._bitmask, 0)
        apply_token_bitmask_inplace(scores, self._bitmask.to(scores.device))
        return scores


class GenaiGuide:
    """Masks onnxruntime-genai's logits before each step and follows the tokens it picks (batch size 1)."""

    def __init__(self, matcher: Any, *, n_vocab: int) -> None:
        from llguidance.numpy import allocate_token_bitmask

        self.matcher = matcher
        self._n_vocab = n_vocab
        self._bitmask = allocate_token_bitmask(1, n_vocab)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """``logits`` (any shape ending in the vocabulary) with every forbidden token at -inf, in place."""
        from llguidance.numpy import apply_token_bitmask_inplace, fill_next_token_bitmask

        fill_next_token_bitmask(self.matcher, self._bitmask, 0)
        apply_token_bitmask_inplace(logits.reshape(1, -1)[:, : self._n_vocab], self._bitmask)
        return logits

    def consume(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise RuntimeError(f"guided decoding lost track of the output: {self.matcher.get_error()}")


def plain_byte_level_decoder(spec: dict[str, Any]) -> bool:
    """Make a byte-level BPE's decoder plain ``ByteLevel``, in place; True if it changed.

    The GGUF-derived SmolLM2 ``tokenizer.json`` chains sentencepiece steps (``ByteFallback``, ``▁`` -> space)
    before ``ByteLevel``. transformers decodes it right, but llguidance (standalone, and the copy inside
    onnxruntime-genai) then reads the vocabulary as sentencepiece pieces: ``Ġ`` stops being a space, so
    a label or string with a space can never be produced. On a byte-level vocabulary those extra steps do
    nothing, so plain ``ByteLevel`` decodes the same text.
    """
    decoder = spec.get("decoder")
    if not isinstance(decoder, dict) or decoder.get("type") != "Sequence":
        return False
    byte_level = [d for d in decoder.get("decoders", []) if isinstance(d, dict) and d.get("type") == "ByteLevel"]
    pre = spec.get("pre_tokenizer")
    pres = pre.get("pretokenizers", []) if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    if not byte_level or not any(isinstance(p, dict) and p.get("type") == "ByteLevel" for p in pres):
        return False
    spec["decoder"] = byte_level[0]
    return True
