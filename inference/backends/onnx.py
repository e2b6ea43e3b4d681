"""A causal LM exported to ONNX (``inference.build.export``), run by ONNX Runtime.

Two runtimes, picked by the catalogue's ``runtime``:

- ``genai`` (onnxruntime-genai): the generation loop and KV cache live in C++, which is what makes a
  135M model fast on CPU (int4: about 2.6x PyTorch eager on 2 cores);
- ``optimum`` (``ORTModelForCausalLM``): transformers' ``generate`` loop over an ONNX Runtime session.

Both encode and decode with the transformers tokenizer saved beside the export: onnxruntime-genai's
own tokenizer mis-decodes the GGUF-derived SmolLM2 tokenizer.

On genai, concurrent requests are decoded together (``inference.backends.batching``), up to the model's
``limits.max_concurrency`` at once; guided-decoding requests, which mask the logits of every step, run
one at a time beside the batch. The optimum runtime stays one request at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from inference.artifacts import TOKENIZER_DIR, export_dir, is_complete
from inference.backends.batching import BatchJob, EngineBatcher
from inference.backends.chat_template import eos_token_ids
from inference.backends.guidance import GenaiGuide, guidance_matcher
from inference.backends.local import LocalBackend
from inference.backends.transformers import generate_token_ids
from inference.catalogue import OnnxModel
from inference.errors import BackendUnavailable, InferenceError
from inference.types import GenerationParams

log = logging.getLogger(__name__)

#: ONNX Runtime execution provider -> onnxruntime-genai provider name.
_GENAI_PROVIDERS = {
    "CUDAExecutionProvider": "cuda",
    "DmlExecutionProvider": "dml",
    "WebGpuExecutionProvider": "webgpu",
    "CPUExecutionProvider": "cpu",
}


class OnnxBackend(LocalBackend):
    """A causal LM exported to ONNX; CUDA first when the catalogue asks for it, else CPU."""

    kind = "onnx"
    spec: OnnxModel

    def __init__(self, name: str, spec: OnnxModel, cache_dir: Path) -> None:
        super().__init__(name, spec, cache_dir)
        #: Where the export is read from (benchmarks may point it at another export of the model).
        self.export_path = export_dir(spec, cache_dir)
        self._provider = "not started"
        self._genai_vocab = 0
        #: Serves unguided genai requests in batches (None on optimum, and before the model is loaded).
        self.batcher: EngineBatcher | None = None

    @property
    def provider(self) -> str:
        """``onnxruntime-genai:cpu`` or ``onnxruntime:CPUExecutionProvider``: what actually runs."""
        return self._provider

    # -- loading ---------------------------------------------------------------------------------------

    def _load(self) -> None:
        spec = self.spec
        if not is_complete(self.export_path):
            # Exporting takes seconds to a minute and hundreds of MB: a deliberate step, not a side
            # effect of the first request.
            raise BackendUnavailable(
                f"{self.name}: no ONNX export of {spec.source} ({spec.runtime}, {spec.precision}) "
                f"at {self.export_path}; run `python -m bot models prepare`",
                backend=self.name,
            )
        from transformers import AutoTokenizer, GenerationConfig

        tok_dir = self.export_path / TOKENIZER_DIR
        try:
            tokenizer = AutoTokenizer.from_pretrained(tok_dir)
            try:
                gen_config: Any = GenerationConfig.from_pretrained(tok_dir)
            except OSError:
                gen_config = None
            if spec.runtime == "genai":
                self._model, self._provider = self._load_genai()
                self._genai_vocab = _genai_vocab_size(self.export_path, len(tokenizer))
                self.batcher = self._new_batcher(self._model)
            else:
                self._model, self._provider = self._load_optimum()
        except InferenceError:
            raise
        except Exception as exc:  # ORT raises its own exception types, not OSError
            raise BackendUnavailable(f"{self.name}: cannot load {self.export_path}: {exc}", backend=self.name) from exc
        self._tokenizer = tokenizer
        self._eos_ids = eos_token_ids(tokenizer, gen_config)
        wanted = spec.providers[0] if spec.providers else "CPUExecutionProvider"
        level = logging.INFO if _same_provider(wanted, self._provider) else logging.WARNING
        log.log(level, "%s: running on %s (asked for %s)", self.name, self._provider, ", ".join(spec.providers))

    def _load_genai(self) -> tuple[Any, str]:
        import onnxruntime_genai as og

        available = {
            "cuda": og.is_cuda_available(),
            "dml": og.is_dml_available(),
            "webgpu": og.is_webgpu_available(),
            "cpu": True,
        }
        for ort_name in [*self.spec.providers, "CPUExecutionProvider"]:
            name = _GENAI_PROVIDERS.get(ort_name)
            if name is None or not available[name]:
                log.info("%s: %s is not available to onnxruntime-genai here; trying the next", self.name, ort_name)
                continue
            config = og.Config(str(self.export_path))
            config.clear_providers()
            if name != "cpu":  # no provider entry means CPU
                config.append_provider(name)
            try:
                return og.Model(config), f"onnxruntime-genai:{name}"
            except Exception as exc:  # a GPU present but unusable (driver, memory): try the next one
                if name == "cpu":
                    raise
                log.warning("%s: onnxruntime-genai could not start on %s: %s", self.name, name, exc)
        raise BackendUnavailable(f"{self.name}: no usable execution provider", backend=self.name)

    def _new_batcher(self, model: Any) -> EngineBatcher:
        import numpy as np
        import onnxruntime_genai as og

        def new_request(job: BatchJob) -> Any:
            params = og.GeneratorParams(model)
            params.set_search_options(**job.options)
            request = og.Request(params)
            request.add_tokens(np.asarray(job.prompt, dtype=np.int32))
            return request

        return EngineBatcher(
            self.name, lambda: og.Engine(model), new_request, max_batch=self.spec.limits.max_concurrency
        )

    async def aclose(self) -> None:
        batcher, self.batcher = self.batcher, None
        if batcher is not None:
            await asyncio.to_thread(batcher.close)  # waits for the worker's current step
        await super().aclose()

    def _load_optimum(self) -> tuple[Any, str]:
        import onnxruntime as ort
        from optimum.onnxruntime import ORTModelForCausalLM

        available = set(ort.get_available_providers())
        chain = [p for p in self.spec.providers if p in available]
        for skipped in set(self.spec.providers) - available:
            log.info("%s: %s is not in this onnxruntime build; skipping it", self.name, skipped)
        if "CPUExecutionProvider" not in chain:
            chain.append("CPUExecutionProvider")
        # ONNX Runtime itself falls back along the chain (onnxruntime-gpu lists CUDA even without a
        # GPU and drops to CPU after logging the missing library), so ask the session what it got.
        model = ORTModelForCausalLM.from_pretrained(self.export_path, providers=chain, use_cache=True)
        return model, f"onnxruntime:{model.session.get_providers()[0]}"

    # -- generation ------------------------------------------------------------------------------------

    def _batched(self, params: GenerationParams) -> EngineBatcher | None:
        """The batcher for this request; None for guided decoding, and once batching has failed here."""
        batcher = self.batcher
        return batcher if batcher is not None and batcher.broken is None and params.constraint is None else None

    def _exclusive(self, params: GenerationParams) -> bool:
        return self._batched(params) is None

    def _token_ids(
        self, prompt: list[int], params: GenerationParams, max_new_tokens: int, stop: threading.Event
    ) -> Iterator[int]:
        batcher = self._batched(params)
        if batcher is not None:
            eos = min(self._eos_ids) if self._eos_ids else None
            options = search_options(len(prompt), params, max_new_tokens)
            return batcher.submit(BatchJob(prompt, max_new_tokens, options, eos)).tokens(stop)
        if self.spec.runtime == "genai":
            guide = None
            if params.constraint is not None:
                matcher = guidance_matcher(
                    self._guidance, self._tokenizer, params.constraint,
                    n_vocab=self._genai_vocab, eos_ids=sorted(self._eos_ids),
                )  # fmt: skip
                guide = GenaiGuide(matcher, n_vocab=self._genai_vocab)
            return genai_token_ids(
                self._model, prompt, params=params, max_new_tokens=max_new_tokens, stop=stop, guide=guide
            )
        return generate_token_ids(
            self._model, prompt, params=params, max_new_tokens=max_new_tokens, eos_ids=self._eos_ids,
            pad_id=self._tokenizer.pad_token_id, stop=stop, logits_processors=self._logits_processors(prompt, params),
        )  # fmt: skip


def genai_token_ids(
    model: Any,
    input_ids: list[int],
    *,
    params: GenerationParams,
    max_new_tokens: int,
    stop: threading.Event,
    guide: GenaiGuide | None = None,
) -> Iterator[int]:
    """New token ids from onnxruntime-genai, one ``generate_next_token`` at a time.

    The caller stops on EOS; ``stop`` is checked before every step, so a closed stream costs at most
    one more token. ``guide`` (guided decoding) masks the logits before every step.
    """
    import numpy as np
    import onnxruntime_genai as og

    gen_params = og.GeneratorParams(model)
    gen_params.set_search_options(**search_options(len(input_ids), params, max_new_tokens))
    generator = og.Generator(model, gen_params)
    try:
        if stop.is_set():
            return
        generator.append_tokens(np.asarray(input_ids, dtype=np.int32))  # the prefill
        produced = 0
        while produced < max_new_tokens and not stop.is_set():
            if guide is not None:
                generator.set_logits(guide.mask(generator.get_logits()))
            generator.generate_next_token()
            produced += 1
            token = int(generator.get_next_tokens()[0])
            yield token  # the caller stops at EOS: a token consumed below is never the end
            if generator.is_done():
                return
            if guide is not None:
                guide.consume(token)
    finally:
        del generator  # frees the KV cache now rather than at the next collection


def search_options(prompt_len: int, params: GenerationParams, max_new_tokens: int) -> dict[str, Any]:
    """onnxruntime-genai search options for one request (the same batched or alone)."""
    sample = params.temperature > 0
    options: dict[str, Any] = {
        # max_length counts the prompt too; keeping it tight also keeps the preallocated KV cache
        # (past_present_share_buffer) small instead of the model's full context length.
        "max_length": prompt_len + max_new_tokens,
        "do_sample": sample,
    }
    if sample:
        options.update(temperature=params.temperature, top_p=params.top_p, top_k=50)
    return options


def _genai_vocab_size(export: Path, fallback: int) -> int:
    """The width of the model's logits (genai_config.json), which guided decoding's mask must match."""
    try:
        config = json.loads((export / "genai_config.json").read_text(encoding="utf-8"))
        return int(config["model"]["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return fallback


def _same_provider(wanted: str, actual: str) -> bool:
    name = actual.split(":", 1)[1]
    return name == wanted or name == _GENAI_PROVIDERS.get(wanted)
