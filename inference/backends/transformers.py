"""A causal LM on PyTorch via transformers (the local stand-in for a large model, and the reference
the ONNX backend is checked against).

Generation runs ``model.generate`` in a thread with a streamer; closing the stream sets an event
that a :class:`~transformers.StoppingCriteria` reads before every token. The same streaming helper
drives optimum's ``ORTModelForCausalLM`` (see :mod:`inference.backends.onnx`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.artifacts import hub_snapshot, model_dir
from inference.backends.chat_template import (
    eos_token_ids,
)
from inference.backends.local import LocalBackend
from inference.catalogue import TransformersModel
from inference.errors import BackendUnavailable
from inference.types import GenerationParams

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_END = object()


def resolve_device(device: str) -> str:
    """``auto``: the first CUDA GPU when torch sees one, else the CPU."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str) -> torch.dtype | str:
    """``auto``: the checkpoint's own dtype on a GPU; float32 on CPU, where half precision is slow."""
    import torch

    if dtype == "auto":
        return "auto" if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


def generate_token_ids(
    model: Any,
    input_ids: list[int],
    *,
    params: GenerationParams,
    max_new_tokens: int,
    eos_ids: set[int],
    pad_id: int | None,
    stop: threading.Event,
    logits_processors: Sequence[Any] = (),
) -> Iterator[int]:
    """New token ids from ``model.generate`` (transformers or optimum), as they are produced.

    ``generate`` blocks, so it runs in its own thread and hands tokens over a queue; closing this
    iterator, or setting ``stop``, ends it before the next token. ``logits_processors`` (guided decoding)
    run before sampling at every step.
    """
    import torch
    from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    tokens: queue.Queue[object] = queue.Queue()
    halt = threading.Event()

    class _Streamer(BaseStreamer):
        first = True

        def put(self, value: torch.Tensor) -> None:
            if self.first:  # generate() first hands over the prompt itself
                self.first = False
                return
            for tok in value.reshape(-1).tolist():
                tokens.put(int(tok))

        def end(self) -> None:
            pass

    class _StopOnEvent(StoppingCriteria):
        def __call__(self, ids: torch.LongTensor, scores: torch.FloatTensor, **kw: Any) -> torch.BoolTensor:
            done = stop.is_set() or halt.is_set()
            return torch.full((ids.shape[0],), done, dtype=torch.bool, device=ids.device)  # type: ignore[return-value]

    sample = params.temperature > 0
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sample,
        temperature=params.temperature if sample else None,
        top_p=params.top_p if sample else None,
        top_k=50 if sample else None,
        eos_token_id=sorted(eos_ids),
        pad_token_id=pad_id if pad_id is not None else min(eos_ids, default=0),
    )
    device = getattr(model, "device", "cpu")
    ids = torch.tensor([input_ids], dtype=torch.long, device=device)

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    generation_config=config,
                    streamer=_Streamer(),
                    stopping_criteria=StoppingCriteriaList([_StopOnEvent()]),
                    logits_processor=LogitsProcessorList(list(logits_processors)),
                )
        except BaseException as exc:  # re-raised on the consuming side
            tokens.put(exc)
        finally:
            tokens.put(_END)

    worker = threading.Thread(target=run, name="switchboard-hf-generate", daemon=True)
    worker.start()
    try:
        while True:
            item = tokens.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        halt.set()
        worker.join()  # at most one forward step: the stopping criterion runs after each token


class TransformersBackend(LocalBackend):
    """A transformers causal LM on the local GPU or CPU."""

    kind = "transformers"
    spec: TransformersModel

    def __init__(self, name: str, spec: TransformersModel, cache_dir: Path) -> None:
        super().__init__(name, spec, cache_dir)
        self._device = "cpu"
        #: The model actually loaded: ``spec.prefer`` once downloaded, else ``spec.source``.
        self.loaded_source = spec.source

    @property
    def provider(self) -> str:
        return f"transformers:{self._device}"

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = self.spec
        try:
            source, revision = self._source()
            device = resolve_device(spec.device)
            kw: dict[str, Any] = {"revision": revision, "trust_remote_code": spec.trust_remote_code}
            tokenizer = AutoTokenizer.from_pretrained(source, **kw)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=resolve_dtype(spec.dtype, device), **kw)
            model.to(device).eval()  # type: ignore[arg-type]  # transformers' stub of .to is wrong
        except (OSError, ValueError, ImportError, RuntimeError) as exc:
            raise BackendUnavailable(f"cannot load {spec.source}: {exc}", backend=self.name) from exc
        self._tokenizer, self._model, self._device = tokenizer, model, device
        self._eos_ids = eos_token_ids(tokenizer, model.generation_config)
        log.info("%s: loaded %s on %s (%s)", self.name, self.loaded_source, device, model.dtype)

    def _source(self) -> tuple[str, str | None]:
        """What to load: the preferred larger model when it has been downloaded, else ``source`` (and say so)."""
        spec = self.spec
        if spec.prefer is not None:
            snapshot = hub_snapshot(spec.prefer, self.cache_dir, spec.revision)
            if snapshot is not None:
                self.loaded_source = spec.prefer
                return str(snapshot), None  # the snapshot is already the revision asked for
            log.warning(
                "%s: %s is not downloaded (run `python -m bot models prepare` where a model hub is reachable); "
                "%s stands in for it",
                self.name, spec.prefer, spec.source,
            )  # fmt: skip
        self.loaded_source = spec.source
        return model_dir(spec.source, self.cache_dir), spec.revision

    def _token_ids(
        self, prompt: list[int], params: GenerationParams, max_new_tokens: int, stop: threading.Event
    ) -> Iterator[int]:
        return generate_token_ids(
            self._model, prompt, params=params, max_new_tokens=max_new_tokens, eos_ids=self._eos_ids,
            pad_id=self._tokenizer.pad_token_id, stop=stop, logits_processors=self._logits_processors(prompt, params),
        )  # fmt: skip
