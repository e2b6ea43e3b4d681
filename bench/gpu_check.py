"""The GPU check: one prepared script for a machine with an NVIDIA GPU (the CUDA paths, measured).

    python bench/gpu_check.py                    # on the GPU machine, after `make setup` there
    python bench/gpu_check.py --json out.json    # also write the figures as JSON (e.g. into $OUT)
    python bench/gpu_check.py --allow-cpu        # no GPU: check that every path falls back cleanly

What it checks, in order, each step reported even when an earlier one failed:

1. the GPU (name, memory) as PyTorch and ONNX Runtime see it;
2. the task classifier on ONNX Runtime's CUDA provider (the provider in use, median routing latency);
3. the small tier exported in fp16 for CUDA (onnxruntime-genai), provider in use, and greedy answers at 64 new
   tokens on the same prompts as PyTorch CUDA (fp16) — decode tokens/s of each, the ratio, and how many
   answers are identical;
4. the fallback: the default fp32 CPU export still loads beside it when CUDA is asked for but not usable.

Without a GPU it exits with status 2 unless ``--allow-cpu`` (then every "cuda" row says what ran instead).
No assertions about speed: it prints a table; the README quotes it with the GPU's name.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

PROMPTS = [
    "What is the capital of France?",
    "Name three fruits and give one fact about each.",
    "Explain in a few sentences why the sky is blue.",
    "Write a Python function that returns the factorial of n.",
    "Give two tips for writing a clear email.",
    "What is the difference between a list and a tuple in Python?",
    "Suggest a name for a small bakery.",
    "Describe a cat in one sentence.",
]
ROUTING_PROMPTS = [
    "translate 'good morning' to German",
    "write a SQL query that counts orders per customer",
    "is this review positive or negative: the soup was cold",
    "what's 15% of 80?",
]


def gpu_info() -> dict[str, Any]:
    info: dict[str, Any] = {"torch_cuda": False, "ort_providers": [], "genai_cuda": False}
    try:
        import torch

        info["torch_cuda"] = torch.cuda.is_available()
        if info["torch_cuda"]:
            props = torch.cuda.get_device_properties(0)
            info["name"] = props.name
            info["memory_gib"] = round(props.total_memory / 2**30, 1)
    except Exception as exc:  # a broken CUDA install is a finding, not a crash
        info["torch_error"] = repr(exc)
    try:
        import onnxruntime as ort

        info["ort_providers"] = ort.get_available_providers()
        info["ort_version"] = ort.__version__
    except Exception as exc:
        info["ort_error"] = repr(exc)
    try:
        import onnxruntime_genai as og

        info["genai_cuda"] = bool(og.is_cuda_available())
    except Exception as exc:
        info["genai_error"] = repr(exc)
    return info


def check_classifier(cache_dir: Path) -> dict[str, Any]:
    from inference.classifier import TaskClassifier
    from inference.classifier.encoder import default_providers
    from inference.types import Request

    clf = TaskClassifier.load(cache_dir, providers=default_providers())
    for text in ROUTING_PROMPTS:  # warm-up (CUDA kernels, allocator)
        clf.classify(Request(text))
    times = []
    for _ in range(10):
        for text in ROUTING_PROMPTS:
            t0 = time.perf_counter()
            clf.classify(Request(text))
            times.append((time.perf_counter() - t0) * 1e3)
    return {"provider": clf.provider, "median_ms": round(statistics.median(times), 2)}


async def _generate(backend: Any, tokens: int) -> dict[str, Any]:
    from inference.types import ChatMessage, GenerationParams

    params = GenerationParams(max_new_tokens=tokens, temperature=0.0)
    await backend.stream([ChatMessage("user", PROMPTS[0])], params).text()  # warm-up
    answers, rates = [], []
    for prompt in PROMPTS:
        stream = backend.stream([ChatMessage("user", prompt)], params)
        t0 = time.perf_counter()
        text = await stream.text()
        total = time.perf_counter() - t0
        first = stream.timings.first_token_s or 0.0
        produced = backend.last_run.generated_tokens if backend.last_run else 0
        if produced > 1 and total > first:
            rates.append((produced - 1) / (total - first))
        answers.append(text)
    return {
        "provider": backend.provider,
        "decode_tok_s": round(statistics.median(rates), 1) if rates else None,
        "answers": answers,
    }


async def check_small_tier(cache_dir: Path, tokens: int, cuda: bool) -> dict[str, Any]:
    from inference.backends.onnx import OnnxBackend
    from inference.build.export import prepare_onnx
    from inference.catalogue import OnnxModel

    # fp16 on the GPU; onnxruntime-genai's CPU kernels don't run an fp16 graph, so a CPU run checks fp32.
    precision = "fp16" if cuda else "fp32"
    spec = OnnxModel(
        source="packaged:smollm2", tier="small", runtime="genai", precision=precision, context_window=8192,
        providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
    )  # fmt: skip
    t0 = time.perf_counter()
    prepare_onnx(spec, cache_dir, lambda msg: print(f"  [{precision} export] {msg}", flush=True))
    export_s = time.perf_counter() - t0
    backend = OnnxBackend(f"smollm2-onnx-{precision}", spec, cache_dir)
    await backend.start()
    try:
        out = await _generate(backend, tokens)
    finally:
        await backend.aclose()
    out["export_s"] = round(export_s, 1)
    out["precision"] = precision
    return out


async def check_pytorch(cache_dir: Path, tokens: int, device: str) -> dict[str, Any]:
    from inference.backends.transformers import TransformersBackend
    from inference.catalogue import TransformersModel

    dtype = "float16" if device == "cuda" else "float32"
    spec = TransformersModel(source="packaged:smollm2", tier="large", device=device, dtype=dtype, context_window=8192)
    backend = TransformersBackend("smollm2-torch", spec, cache_dir)
    await backend.start()
    try:
        return await _generate(backend, tokens)
    finally:
        await backend.aclose()


async def check_fallback(cache_dir: Path) -> dict[str, Any]:
    """The default (CPU) export with CUDA asked for first: it must load on whatever is usable."""
    from inference.backends.onnx import OnnxBackend
    from inference.build.export import prepare_onnx
    from inference.catalogue import OnnxModel

    spec = OnnxModel(source="packaged:smollm2", tier="small", runtime="genai", precision="fp32", context_window=8192)
    prepare_onnx(spec, cache_dir, lambda msg: print(f"  [fp32 export] {msg}", flush=True))
    backend = OnnxBackend("smollm2-onnx", spec, cache_dir)
    await backend.start()
    try:
        from inference.types import ChatMessage, GenerationParams

        text = await backend.stream([ChatMessage("user", "Say hello.")], GenerationParams(max_new_tokens=8)).text()
        return {"provider": backend.provider, "answered": bool(text.strip())}
    finally:
        await backend.aclose()


def _step(results: dict[str, Any], name: str, fn: Any) -> None:
    print(f"== {name}", flush=True)
    try:
        value = fn()
        results[name] = asyncio.run(value) if asyncio.iscoroutine(value) else value
    except Exception as exc:
        traceback.print_exc()
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}


def table(results: dict[str, Any]) -> str:
    gpu = results.get("gpu", {})
    small, torch_ = results.get("small_tier", {}), results.get("pytorch", {})
    same = sum(a == b for a, b in zip(small.get("answers", []), torch_.get("answers", []), strict=False))
    ratio = None
    if small.get("decode_tok_s") and torch_.get("decode_tok_s"):
        ratio = small["decode_tok_s"] / torch_["decode_tok_s"]
    rows = [
        f"GPU: {gpu.get('name', 'none')} ({gpu.get('memory_gib', '?')} GiB); "
        f"ONNX Runtime {gpu.get('ort_version', '?')} "
        f"providers: {', '.join(gpu.get('ort_providers', []))}; onnxruntime-genai CUDA: {gpu.get('genai_cuda')}",
        "",
        "| check | provider in use | figure |",
        "|---|---|---|",
        f"| task classifier | {results.get('classifier', {}).get('provider', 'error')} | "
        f"median {results.get('classifier', {}).get('median_ms', '?')} ms per route |",
        f"| small tier, {small.get('precision', '?')} genai export | {small.get('provider', 'error')} | "
        f"decode {small.get('decode_tok_s', '?')} tok/s |",
        f"| PyTorch (fp16 on CUDA, else fp32) | {torch_.get('provider', 'error')} | "
        f"decode {torch_.get('decode_tok_s', '?')} tok/s |",
        f"| small tier vs PyTorch | | {f'{ratio:.2f}x' if ratio else '?'}; identical answers {same}/{len(PROMPTS)} |",
        f"| CPU export with CUDA asked first | {results.get('fallback', {}).get('provider', 'error')} | "
        f"answered: {results.get('fallback', {}).get('answered')} |",
    ]
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    ap.add_argument("--allow-cpu", action="store_true", help="run without a GPU (checks the fallbacks)")
    args = ap.parse_args()

    from inference.artifacts import default_cache_dir

    cache_dir = args.cache_dir or default_cache_dir()
    results: dict[str, Any] = {"gpu": gpu_info()}
    cuda = bool(results["gpu"]["torch_cuda"])
    if not cuda and not args.allow_cpu:
        print("no CUDA GPU visible to PyTorch; run with --allow-cpu to check the fallbacks", file=sys.stderr)
        print(json.dumps(results["gpu"], indent=2))
        return 2
    _step(results, "classifier", lambda: check_classifier(cache_dir))
    _step(results, "small_tier", lambda: check_small_tier(cache_dir, args.tokens, cuda))
    _step(results, "pytorch", lambda: check_pytorch(cache_dir, args.tokens, "cuda" if cuda else "cpu"))
    _step(results, "fallback", lambda: check_fallback(cache_dir))
    print(table(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
