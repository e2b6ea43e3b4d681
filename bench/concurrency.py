"""Many users at once on the small tier: 16 simultaneous requests to the real SmolLM2 (genai), batched.

    python bench/concurrency.py                    # in-process and through `python -m bot serve`
    python bench/concurrency.py --modes inprocess --clients 16 --tokens 64
    python bench/concurrency.py --readme           # also writes the table into README.md

Three measurements, greedy, at most ``--tokens`` new tokens per answer, answers ending at EOS as in production:

- in-process: the small tier's backend behind the resilience layer (its configured batch and queue from
  config/models.yaml): first the prompts one after another, alone (single stream), then ``--clients`` requests
  at once;
- HTTP: ``python -m bot serve`` in a subprocess, model ``smollm2-onnx``: first one streaming OpenAI
  chat-completions client at a time (single stream), then ``--clients`` streaming clients (aiohttp) at once. The
  server adds its task's system prompt, so its answers differ from the in-process ones: each burst is compared
  with the single stream of its own path.

Reported: requests served vs refused as busy, aggregate tokens/s (all generated tokens / wall time of the burst)
and its ratio to the same path's single-stream tokens/s, time to first token p50 / p95 / max, and the load average
(the number of runnable processes; this machine has few cores and other jobs share them). Generated tokens are
counted by re-tokenising each answer with the model's tokenizer, the same way in every mode. No assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

MODEL = "smollm2-onnx"
#: Distinct everyday chat prompts (written here, not from any benchmark). No coding questions: through the API the
#: code task shows its answer once whole (fences and file decided on all of it), so its first token is its last.
PROMPTS = [
    "What is the capital of France?",
    "Name three fruits and give one fact about each.",
    "Explain in a few sentences why the sky is blue.",
    "Write a short thank-you note to a neighbour.",
    "Summarise the plot of Romeo and Juliet in three sentences.",
    "Give me two tips for sleeping better.",
    "What is the difference between weather and climate?",
    "Write a haiku about autumn leaves.",
    "How many days are there in a leap year?",
    "Suggest a name for a friendly robot.",
    "Translate 'good morning' into Spanish.",
    "Why do cats purr?",
    "List three uses of a paperclip.",
    "What does a librarian do?",
    "Describe the taste of a lemon.",
    "How do plants make their food?",
]


@dataclass
class Result:
    """One request of a burst."""

    ttft_s: float | None = None
    total_s: float = 0.0
    text: str = ""
    error: str | None = None


@dataclass
class Row:
    name: str
    results: list[Result] = field(default_factory=list)
    wall_s: float = 0.0
    tokens: int = 0
    load: tuple[float, float] = (0.0, 0.0)
    note: str = ""
    #: The single-stream row this burst is compared with (None: this row is a single stream).
    base: Row | None = None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# -- in-process -------------------------------------------------------------------------------------------------


#: ``--precision``: another export of the same model, in-process only (the server reads config/models.yaml).
PRECISION: str | None = None


def _spec() -> Any:
    from inference.catalogue import load_catalogue

    spec = load_catalogue().get(MODEL)
    return spec.model_copy(update={"precision": PRECISION}) if PRECISION else spec


async def _backend(cache_dir: Path) -> Any:
    from inference.backends.onnx import OnnxBackend
    from inference.serving.resilience import ResilientBackend

    spec = _spec()
    raw = OnnxBackend(MODEL, spec, cache_dir)
    wrapped = ResilientBackend(raw, spec)
    await wrapped.start()
    return wrapped


async def _one(backend: Any, prompt: str, tokens: int) -> Result:
    from inference.errors import InferenceError
    from inference.types import ChatMessage, GenerationParams

    result = Result()
    t0 = time.perf_counter()
    try:
        async for piece in backend.stream([ChatMessage("user", prompt)], GenerationParams(max_new_tokens=tokens)):
            if result.ttft_s is None:
                result.ttft_s = time.perf_counter() - t0
            result.text += piece
    except InferenceError as exc:
        result.error = f"{type(exc).__name__}: {exc.short}"
    result.total_s = time.perf_counter() - t0
    return result


async def single_stream(backend: Any, n: int, tokens: int) -> Row:
    row = Row("in-process, one request at a time")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    for prompt in PROMPTS[:n]:
        row.results.append(await _one(backend, prompt, tokens))
    row.wall_s = time.perf_counter() - t0
    row.load = (load0, os.getloadavg()[0])
    return row


async def inprocess_burst(backend: Any, clients: int, tokens: int, base: Row) -> Row:
    row = Row(f"in-process, {clients} at once", base=base)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(clients)]
    row.results = list(await asyncio.gather(*(_one(backend, p, tokens) for p in prompts)))
    row.wall_s = time.perf_counter() - t0
    row.load = (load0, os.getloadavg()[0])
    batcher = getattr(backend.backend, "batcher", None)
    if batcher is not None:
        row.note = f"peak batch {batcher.peak_active}"
    return row


# -- through `python -m bot serve` ------------------------------------------------------------------------------


def _start_server() -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "SWITCHBOARD_WARM_MODELS": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", "--port", "0"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "serving the OpenAI-compatible API on " in line:
            return proc, line.rsplit(" ", 1)[1].strip()
    proc.wait()
    raise SystemExit(f"`python -m bot serve` exited ({proc.returncode}) before listening")


async def _http_one(session: Any, url: str, prompt: str, tokens: int) -> Result:
    result = Result()
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "max_tokens": tokens,
        "temperature": 0,
    }
    t0 = time.perf_counter()
    try:
        async with session.post(f"{url}/chat/completions", json=body) as response:
            if response.status != 200:
                payload = await response.json(content_type=None)
                result.error = f"HTTP {response.status}: {payload.get('error', {}).get('message', '')}"
            else:
                async for raw in response.content:
                    line = raw.decode().strip()
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        result.error = str(event["error"].get("message"))
                        continue
                    for choice in event.get("choices", []):
                        content = choice.get("delta", {}).get("content")
                        if content:
                            if result.ttft_s is None:
                                result.ttft_s = time.perf_counter() - t0
                            result.text += content
    except Exception as exc:  # a dropped connection counts as a failed request, with its reason
        result.error = f"{type(exc).__name__}: {exc}"
    result.total_s = time.perf_counter() - t0
    return result


async def http_rows(clients: int, tokens: int, single: int) -> list[Row]:
    import aiohttp

    alone = Row("`python -m bot serve`, one client at a time")
    row = Row(f"`python -m bot serve`, {clients} streaming HTTP clients", base=alone)
    proc, url = _start_server()
    try:
        timeout = aiohttp.ClientTimeout(total=600)
        connector = aiohttp.TCPConnector(limit=clients + 4)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            warm = await _http_one(session, url, PROMPTS[0], 4)  # loads the model: not part of the burst
            if warm.error:
                raise SystemExit(f"the server could not answer: {warm.error}")
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            for prompt in PROMPTS[:single]:
                alone.results.append(await _http_one(session, url, prompt, tokens))
            alone.wall_s = time.perf_counter() - t0
            alone.load = (load0, os.getloadavg()[0])
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(clients)]
            row.results = list(await asyncio.gather(*(_http_one(session, url, p, tokens) for p in prompts)))
            row.wall_s = time.perf_counter() - t0
            row.load = (load0, os.getloadavg()[0])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return [alone, row]


# -- report -----------------------------------------------------------------------------------------------------


def _count_tokens(rows: list[Row], cache_dir: Path) -> None:
    from transformers import AutoTokenizer

    from inference.artifacts import TOKENIZER_DIR, export_dir

    tokenizer = AutoTokenizer.from_pretrained(export_dir(_spec(), cache_dir) / TOKENIZER_DIR)
    for row in rows:
        row.tokens = sum(len(tokenizer(r.text, add_special_tokens=False)["input_ids"]) for r in row.results)


def _rate(row: Row) -> float:
    return row.tokens / row.wall_s if row.wall_s else 0.0


def table(rows: list[Row], clients: int, tokens: int) -> str:
    single = next((len(row.results) for row in rows if row.base is None), 0)
    lines = [
        "| run | served | busy / failed | tokens | wall | aggregate tok/s | vs single stream "
        "| first token p50 / p95 / max | load avg before -> after |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ok = [r for r in row.results if r.error is None]
        busy = sum(1 for r in row.results if r.error and "busy" in r.error.lower())
        failed = len(row.results) - len(ok) - busy
        ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
        ttft = " / ".join(_ms(_pct(ttfts, q)) for q in (0.5, 0.95, 1.0)) if ttfts else "-"
        rate = _rate(row)
        base_rate = _rate(row.base or row)
        ratio = f"{rate / base_rate:.2f}x" if base_rate else "-"
        name = f"{row.name} ({row.note})" if row.note else row.name
        lines.append(
            f"| {name} | {len(ok)}/{len(row.results)} | {busy} / {failed} | {row.tokens} | {row.wall_s:.1f} s "
            f"| {rate:.1f} | {ratio} | {ttft} | {row.load[0]:.1f} -> {row.load[1]:.1f} |"
        )
    spec = _spec()
    lines.append("")
    lines.append(
        f"SmolLM2-135M-Instruct, {MODEL} ({spec.runtime} {spec.precision}, CPU), greedy, at most {tokens} new tokens, "
        f"{clients} distinct prompts sent at once; batch {spec.limits.max_concurrency}, queue "
        f"{spec.limits.max_queue} (config/models.yaml). Single stream: the first "
        f"{single} prompts one after another, each burst against the single stream of its own path. "
        "Tokens: each answer re-tokenised. Load average: "
        f"{os.cpu_count()} cores shared with other jobs."
    )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Row]:
    from inference.artifacts import default_cache_dir, is_prepared

    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if not is_prepared(_spec(), cache_dir):
        raise SystemExit(f"{MODEL} is not prepared in {cache_dir}: run `python -m bot models prepare` first")
    rows: list[Row] = []
    if "inprocess" in args.modes:
        backend = await _backend(cache_dir)
        try:
            await _one(backend, PROMPTS[0], 4)  # warm-up: first-run allocations are not part of any figure
            base = await single_stream(backend, args.single, args.tokens)
            rows += [base, await inprocess_burst(backend, args.clients, args.tokens, base)]
        finally:
            await backend.aclose()
    if "http" in args.modes:
        rows += await http_rows(args.clients, args.tokens, args.single)
    _count_tokens(rows, cache_dir)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64, help="most new tokens per answer")
    parser.add_argument("--single", type=int, default=4, help="prompts in the single-stream baseline")
    parser.add_argument("--modes", nargs="+", choices=["inprocess", "http"], default=["inprocess", "http"])
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--precision", default=None, help="in-process only: another prepared export (fp32, int4...)")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every answer and error")
    args = parser.parse_args()
    if not 1 <= args.clients <= len(PROMPTS) * 8 or args.tokens < 1 or not 1 <= args.single <= len(PROMPTS):
        parser.error("--clients must be 1..128, --tokens at least 1, --single 1..16")
    if args.precision and "http" in args.modes:
        parser.error("--precision applies in-process only: add --modes inprocess")
    global PRECISION
    PRECISION = args.precision
    rows = asyncio.run(main_async(args))
    if args.verbose:
        for row in rows:
            for r in row.results:
                ttft = f"{r.ttft_s:.2f}s" if r.ttft_s is not None else "-"
                print(f"[{row.name}] first token {ttft}, total {r.total_s:.2f}s: {r.error or repr(r.text[:60])}")
    text = table(rows, args.clients, args.tokens)
    print(text)
    if args.readme:
        from bench._readme import write_section

        write_section("concurrency", text)


if __name__ == "__main__":
    main()
