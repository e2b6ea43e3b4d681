"""Small-tier benchmark: SmolLM2-135M-Instruct on ONNX Runtime vs PyTorch eager.

    python bench/small_tier.py                       # default variants, 3 rounds of 5 prompts
    python bench/small_tier.py --rounds 5 --variants pytorch-fp32 genai-int4

Each variant (runtime + precision) runs in its own subprocess, so peak memory (ru_maxrss) is its own
and one runtime's thread pools or caches never slow another. All workers stay loaded; the parent
sends the same prompt to each in turn and rotates the order every round (alternating runs), so a
noisy neighbour on the machine hits every variant alike. Greedy decoding, at most 64 new tokens,
through the real backends (streaming, incremental decoding), answers ending at EOS as in production.

Reported per variant (medians over all timed runs): end-to-end tokens/s (new tokens / wall time,
prefill included), decode tokens/s (after the first token), time to first token, the ratio of each
speed to PyTorch's, peak RSS, load time, and how close the greedy answers stay to PyTorch fp32's;
then every variant's answer to each prompt side by side, so the quality cost of each precision is
visible. No assertions: numbers vary with the machine (PyTorch's 2-thread loop slows several times
over when a neighbour process is busy; the genai C++ loop much less; alternating keeps it fair).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
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
    "Summarise the plot of Romeo and Juliet in three sentences.",
]
#: name -> (backend kind, runtime, precision). genai-int4 is Switchboard's export (int8 head, the
#: GGUF's exact 4-bit grid restored); genai-int4-plain is the model builder's plain int4.
VARIANTS: dict[str, tuple[str, str, str]] = {
    "pytorch-fp32": ("transformers", "", "fp32"),
    "optimum-fp32": ("onnx", "optimum", "fp32"),
    "optimum-int8": ("onnx", "optimum", "int8"),
    "optimum-int4": ("onnx", "optimum", "int4"),
    "genai-fp32": ("onnx", "genai", "fp32"),
    "genai-int4-plain": ("onnx", "genai", "int4"),
    "genai-int4": ("onnx", "genai", "int4"),
}
PLAIN = "genai-int4-plain"
DEFAULT_VARIANTS = list(VARIANTS)
BASELINE = "pytorch-fp32"


def _spec(name: str) -> Any:
    from inference.catalogue import OnnxModel, TransformersModel

    kind, runtime, precision = VARIANTS[name]
    common: dict[str, Any] = {"source": "packaged:smollm2", "tier": "small", "context_window": 8192}
    if kind == "transformers":
        return TransformersModel(**common, device="cpu", dtype="float32")
    # CPU only: the benchmark compares runtimes on this machine's CPU.
    return OnnxModel(**common, runtime=runtime, precision=precision, providers=("CPUExecutionProvider",))


def _plain_dir(spec: Any, cache_dir: Path) -> Path:
    from inference.build.export import export_dir

    return export_dir(spec, cache_dir).with_name(export_dir(spec, cache_dir).name + "-plain")


def _peak_rss_mb() -> float:
    """This process's peak resident memory.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec, so a worker started by a big
    parent would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; a fallback


# -- worker: one variant, one process ----------------------------------------------------------------


async def _worker(name: str, cache_dir: Path, max_new_tokens: int) -> None:
    from inference.backends.onnx import OnnxBackend
    from inference.backends.transformers import TransformersBackend
    from inference.types import ChatMessage, GenerationParams

    spec = _spec(name)
    started = time.perf_counter()
    cls: Any = TransformersBackend if spec.kind == "transformers" else OnnxBackend
    backend = cls(name, spec, cache_dir)
    if name == PLAIN:
        backend.export_path = _plain_dir(spec, cache_dir)
    await backend.start()
    load_s = time.perf_counter() - started
    _send({"ready": True, "load_s": load_s, "provider": backend.provider, "rss_mb": _peak_rss_mb()})
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        prompt = PROMPTS[int(line)]
        t0 = time.perf_counter()
        stream = backend.stream([ChatMessage("user", prompt)], params)
        text = await stream.text()
        total = time.perf_counter() - t0
        _send(
            {
                "prompt": int(line),
                "tokens": backend.last_run.generated_tokens,
                "ttft_s": stream.timings.first_token_s,
                "total_s": total,
                "text": text,
                "peak_rss_mb": _peak_rss_mb(),
            }
        )


def _send(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# -- parent: prepare, start workers, alternate, report -----------------------------------------------


class Worker:
    def __init__(self, name: str, cache_dir: Path, tokens: int) -> None:
        self.name = name
        cmd = [sys.executable, __file__, "--worker", name, "--cache-dir", str(cache_dir), "--tokens", str(tokens)]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                return dict(json.loads(line))
        raise RuntimeError(f"worker {self.name} exited with status {self.proc.wait()}")

    def run(self, prompt: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{prompt}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _prepare(names: list[str], cache_dir: Path) -> None:
    from inference.build.export import prepare_onnx
    from inference.build.sources import hf_dir

    hf_dir("packaged:smollm2", cache_dir)  # the PyTorch variant's weights (dequantized once)
    for name in names:
        spec = _spec(name)
        if spec.kind == "onnx":
            say = lambda msg, n=name: print(f"  [{n}] {msg}", flush=True)  # noqa: E731
            if name == PLAIN:
                prepare_onnx(spec, cache_dir, say, out=_plain_dir(spec, cache_dir), tuned_int4=False)
            else:
                prepare_onnx(spec, cache_dir, say)


def _fmt_answer(text: str, width: int) -> str:
    flat = " ".join(text.split())  # one table row per answer
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds over all prompts (after a warm-up)")
    ap.add_argument("--tokens", type=int, default=64, help="max new tokens")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--answer-width", type=int, default=160)
    ap.add_argument("--readme", action="store_true", help="also write the table into README.md")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    from inference.build.sources import default_cache_dir

    cache_dir = args.cache_dir or default_cache_dir()
    if args.worker:
        asyncio.run(_worker(args.worker, cache_dir, args.tokens))
        return

    names: list[str] = list(dict.fromkeys([BASELINE, *args.variants]))
    print(f"preparing {', '.join(names)} in {cache_dir}", flush=True)
    _prepare(names, cache_dir)

    workers: dict[str, Worker] = {}
    try:
        for name in names:  # one at a time, so loading never competes with another load
            workers[name] = Worker(name, cache_dir, args.tokens)
            print(f"  {name}: loaded in {workers[name].info['load_s']:.1f} s on {workers[name].info['provider']}")
        for w in workers.values():  # warm-up: first-call allocations, thread pools
            w.run(0)
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        order = list(names)
        for rnd in range(args.rounds):
            for p in range(len(PROMPTS)):
                for name in order:
                    runs[name].append(workers[name].run(p))
                order = order[1:] + order[:1]  # rotate: each variant takes every slot in turn
            print(f"  round {rnd + 1}/{args.rounds} done", flush=True)
        peak = {n: workers[n].run(0)["peak_rss_mb"] for n in names}
    finally:
        for w in workers.values():
            w.close()

    _report(names, runs, peak, {n: w.info for n, w in workers.items()}, args)


def _report(
    names: list[str],
    runs: dict[str, list[dict[str, Any]]],
    peak: dict[str, float],
    info: dict[str, dict[str, Any]],
    args: argparse.Namespace,
) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(_metric(r, key) for r in runs[name])

    base_e2e, base_dec = med(BASELINE, "e2e"), med(BASELINE, "decode")
    cpus = os.cpu_count()
    print(
        f"\n## SmolLM2-135M-Instruct, greedy, <= {args.tokens} new tokens, {len(PROMPTS)} prompts x "
        f"{args.rounds} rounds, alternating, {cpus} CPUs (medians)\n"
    )
    print("| variant | provider | new tokens | tok/s (e2e) | vs PyTorch | decode tok/s | vs PyTorch "
          "| TTFT ms | peak RSS MB | load s | same answer as PyTorch | common prefix, words |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        e2e, dec = med(n, "e2e"), med(n, "decode")
        same, prefix = _agreement(runs[BASELINE], runs[n])
        print(
            f"| {n} | {info[n]['provider']} | {med(n, 'tokens'):.0f} | {e2e:.1f} | {e2e / base_e2e:.2f}x "
            f"| {dec:.1f} | {dec / base_dec:.2f}x | {med(n, 'ttft') * 1000:.0f} | {peak[n]:.0f} "
            f"| {info[n]['load_s']:.1f} | {same}/{len(PROMPTS)} | {prefix:.1f} |"
        )
    if args.readme:
        from bench._readme import write_section

        rows = ["| variant | decode tok/s | vs PyTorch | time to first token | peak RSS | same answer as PyTorch |"]
        rows.append("|---|---:|---:|---:|---:|---:|")
        for n in names:
            dec = med(n, "decode")
            same, _prefix = _agreement(runs[BASELINE], runs[n])
            rows.append(
                f"| {n} | {dec:.1f} | {dec / base_dec:.2f}x | {med(n, 'ttft') * 1000:.0f} ms | {peak[n]:.0f} MB "
                f"| {same}/{len(PROMPTS)} |"
            )
        write_section("small_tier", "\n".join(rows))
    print("\n## Answers (greedy, first timed round)\n")
    for p, prompt in enumerate(PROMPTS):
        print(f"**{prompt}**\n")
        print("| variant | answer |\n|---|---|")
        for n in names:
            answer = next(r["text"] for r in runs[n] if r["prompt"] == p)
            cell = _fmt_answer(answer, args.answer_width).replace("|", "\\|")
            print(f"| {n} | {cell} |")
        print()


def _agreement(reference: list[dict[str, Any]], runs: list[dict[str, Any]]) -> tuple[int, float]:
    """How close greedy answers stay to PyTorch fp32's: identical answers, and the mean number of
    leading words in common (a drift measure: quantization errors change a word, then the rest)."""
    same, prefixes = 0, []
    for p in range(len(PROMPTS)):
        a = next(r["text"] for r in reference if r["prompt"] == p).split()
        b = next(r["text"] for r in runs if r["prompt"] == p).split()
        same += a == b
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        prefixes.append(k)
    return same, statistics.mean(prefixes)


def _metric(run: dict[str, Any], key: str) -> float:
    tokens, total, ttft = run["tokens"], run["total_s"], run["ttft_s"] or run["total_s"]
    if key == "tokens":
        return float(tokens)
    if key == "ttft":
        return float(ttft)
    if key == "e2e":
        return tokens / total
    # decode: tokens after the first over the time after the first piece arrived
    return (tokens - 1) / max(total - ttft, 1e-9) if tokens > 1 else 0.0


if __name__ == "__main__":
    main()
