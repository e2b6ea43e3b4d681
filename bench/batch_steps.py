"""What one step of the batched small-tier decoder costs, by batch size: the ceiling of continuous batching.

    python bench/batch_steps.py                          # the default export (int4-exact)
    python bench/batch_steps.py --precision fp32         # another export of the same model

For each batch size: the median time of one decode step (every row one new token, after a 60-token prompt) and
the tokens/s a batch that size gives, against one row alone; also one 25-token prefill, and sixteen short prompts
prefilled in one run, against each alone after a stored beginning and against all of them after it in one run.
Prepares the export first when missing. No assertions: it prints a table (README, "Many users at once").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    from inference.artifacts import default_cache_dir, export_dir
    from inference.backends.ort_decoder import OrtDecoder
    from inference.build.export import prepare_onnx
    from inference.catalogue import OnnxModel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="int4-exact")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    spec = OnnxModel(
        source="packaged:smollm2", tier="small", runtime="genai", precision=args.precision, context_window=8192
    )
    cache = default_cache_dir()
    prepare_onnx(spec, cache, lambda msg: print(f"  {msg}", file=sys.stderr))
    decoder = OrtDecoder(export_dir(spec, cache))
    prompt = list(range(100, 160))
    print(f"SmolLM2-135M-Instruct, genai {args.precision} export, ONNX Runtime CPU, median of {args.steps} steps\n")
    print("| rows | step | tokens/s | vs one row | 25-token prefill |")
    print("|---:|---:|---:|---:|---:|")
    alone = 0.0
    for rows in args.sizes:
        _, state = decoder._prefill_plain([prompt] * rows)
        tokens = [1] * rows
        for _ in range(3):  # warm-up: first-run allocations
            _, state = decoder.step(state, tokens)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            _, state = decoder.step(state, tokens)
            times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        decoder._prefill_plain([prompt[:25]])
        prefill = time.perf_counter() - t0
        step = statistics.median(times)
        rate = rows / step
        alone = alone or rate
        print(f"| {rows} | {step * 1000:.1f} ms | {rate:.0f} | {rate / alone:.2f}x | {prefill * 1000:.1f} ms |")
    prompts_after_a_beginning(decoder, prompt, args.steps)


def prompts_after_a_beginning(decoder: Any, beginning: list[int], runs: int) -> None:
    """Sixteen 17-token prompts: all in one run from scratch; each alone after a stored beginning; and all after
    that beginning in one run, folded into one row (as a burst behind a task's system prompt runs: ONNX Runtime's
    attention takes one row when given a past)."""
    from inference.backends.ort_decoder import Prefix

    rests = [list(range(200 + 17 * i, 217 + 17 * i)) for i in range(16)]
    _, state = decoder._prefill_plain([beginning])
    stored = Prefix(len(beginning), [np.ascontiguousarray(a[:, :, : len(beginning)]) for a in state.arrays])
    together, alone, folded = [], [], []
    for _ in range(max(3, runs // 3)):
        t0 = time.perf_counter()
        decoder._prefill_plain(rests)
        together.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for rest in rests:
            decoder._prefill_after(stored, rest)
        alone.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        decoder._prefill_folded(stored, rests)
        folded.append(time.perf_counter() - t0)
    ms = {name: statistics.median(times) * 1000 for name, times in (("t", together), ("a", alone), ("f", folded))}
    print(
        f"\nSixteen 17-token prompts: {ms['t']:.0f} ms in one run; after a stored {len(beginning)}-token beginning, "
        f"{ms['a']:.0f} ms one at a time ({ms['a'] / 16:.0f} ms each) and {ms['f']:.0f} ms in one run."
    )


if __name__ == "__main__":
    main()
