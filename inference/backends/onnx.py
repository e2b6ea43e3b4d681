"""A causal LM exported to ONNX (``inference.build.export``), run by ONNX Runtime.

Two runtimes, picked by the catalogue's ``runtime``:

- ``genai`` (onnxruntime-genai): the generation loop and KV cache live in C++, which is what makes a
  135M model fast on CPU (int4: about 2.6x PyTorch eager on 2 cores);
- ``optimum`` (``ORTModelForCausalLM``): transformers' ``generate`` loop over an ONNX Runtime session.

Both encode and decode with the transformers tokenizer saved beside the export: onnxruntime-genai's
own tokenizer mis-decodes the GGUF-derived SmolLM2 tokenizer.

On CPU a genai export does not go through onnxruntime-genai at all: Switchboard runs the same graph on a plain
ONNX Runtime session (``inference.backends.ort_decoder``) with continuous batching (``inference.backends.batching``):
concurrent requests, guided ones included, are decoded together, up to the model's ``limits.max_concurrency`` at
once. On a GPU provider (and should the batched decoder fail) onnxruntime-genai generates, one request at a time.
The optimum runtime stays one request at a time.
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
from inference.backends.batching import BatchJob, ContinuousBatcher, Greedy, Guided, Sampler, TokenChooser
from inference.backends.chat_template import eos_token_ids
from inference.backends.guidance import GenaiGuide, guidance_matcher
from inference.backends.local import LocalBackend
from inference.backends.ort_decoder import OrtDecoder
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
        #: Serves genai requests in batches on CPU (None on optimum, on a GPU, and before the model is loaded).
        self.batcher: ContinuousBatcher[Any] | None = None
        #: onnxruntime-genai's model: what generates on a GPU, and on CPU should the batched decoder fail.
        self._genai: Any = None
        self._genai_lock = threading.Lock()

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
            if name == "cpu":
                try:
                    decoder = OrtDecoder(self.export_path, max_rows=self.spec.limits.max_concurrency)
                except Exception as exc:  # an export this decoder does not know: genai runs it, unbatched
                    log.warning(
                        "%s: no batched decoder for this export (%s); onnxruntime-genai instead", self.name, exc
                    )
                else:
                    self.batcher = ContinuousBatcher(self.name, decoder, max_batch=self.spec.limits.max_concurrency)
                    self.batcher.warm_up()
                    return decoder, "onnxruntime:CPUExecutionProvider"
            try:
                self._genai = load_genai_model(self.export_path, name)
                return self._genai, f"onnxruntime-genai:{name}"
            except Exception as exc:  # a GPU present but unusable (driver, memory): try the next one
                if name == "cpu":
                    raise
                log.warning("%s: onnxruntime-genai could not start on %s: %s", self.name, name, exc)
        raise BackendUnavailable(f"{self.name}: no usable execution provider", backend=self.name)

    def genai_model(self) -> Any:
        """onnxruntime-genai's model, loaded on first use when the batched decoder is what started."""
        with self._genai_lock:
            if self._genai is None:
                self._genai = load_genai_model(self.export_path, "cpu")
            return self._genai

    async def aclose(self) -> None:
        batcher, self.batcher = self.batcher, None
        if batcher is not None:
            await asyncio.to_thread(batcher.close)  # waits for the worker's current step
        self._genai = None
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

    def _batched(self) -> ContinuousBatcher[Any] | None:
        """The batcher; None where there is none, and once a batch has failed here."""
        batcher = self.batcher
        return batcher if batcher is not None and batcher.broken is None else None

    def _exclusive(self, params: GenerationParams) -> bool:
        return self._batched() is None

    def _guide(self, params: GenerationParams) -> GenaiGuide | None:
        if params.constraint is None:
            return None
        matcher = guidance_matcher(
            self._guidance, self._tokenizer, params.constraint,
            n_vocab=self._genai_vocab, eos_ids=sorted(self._eos_ids),
        )  # fmt: skip
        return GenaiGuide(matcher, n_vocab=self._genai_vocab)

    def _token_ids(
        self, prompt: list[int], params: GenerationParams, max_new_tokens: int, stop: threading.Event
    ) -> Iterator[int]:
        if self.spec.runtime == "genai":
            guide = self._guide(params)
            batcher = self._batched()
            if batcher is not None:
                chooser: TokenChooser = (
                    Sampler(params.temperature, params.top_p) if params.temperature > 0 else Greedy()
                )
                if guide is not None:
                    chooser = Guided(guide, chooser)
                job = BatchJob(prompt, max_new_tokens, frozenset(self._eos_ids), chooser)
                return batcher.submit(job).tokens(stop)
            return genai_token_ids(
                self.genai_model(), prompt, params=params, max_new_tokens=max_new_tokens, stop=stop, guide=guide
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


def load_genai_model(export: Path, provider: str) -> Any:
    """onnxruntime-genai's model of ``export`` on ``provider`` (``cpu``, ``cuda``...)."""
    import onnxruntime_genai as og

    config = og.Config(str(export))
    config.clear_providers()
    if provider != "cpu":  # no provider entry means CPU
        config.append_provider(provider)
    return og.Model(config)


def search_options(prompt_len: int, params: GenerationParams, max_new_tokens: int) -> dict[str, Any]:
    """onnxruntime-genai search options for one request (the GPU path, and the CPU fallback)."""
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
