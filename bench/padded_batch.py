"""Probe: is a padded batched onnxruntime-genai ``Generator`` correct, and fast enough for 16 users at once?

    python bench/padded_batch.py                        # the small tier's export (config/models.yaml)
    python bench/padded_batch.py --precision fp32       # another export of the same model

A measurement for issue 12 ("many users at once"), not part of the bot. Greedy, ``--tokens`` new tokens, the
16 prompts of bench/concurrency.py with the model's chat template (as the in-process benchmark sends them).

1. Correctness: each prompt alone (batch 1) vs all of them as one batch (``batch_size`` 16, one 2-D
   ``append_tokens``): prompts cut to equal token length (no padding), then the real prompts left-padded and
   right-padded. Reported: answers identical, mean matching prefix, rows that differ at the first token.
2. Cost: prefill and one decode step at batch 1 and at batch 16 (right-padded).
3. Throughput: the prompts one after another vs one padded batch of 16 (rows that end early keep computing until
   the last one ends: a genai Generator cannot drop a row), with the time to the batch's first tokens.

The pad id is set to 0 (``<|endoftext|>``, in none of these prompts) with ``Config.overlay``: the export's
``pad_token_id`` is 1, ``<|im_start|>``, which every chat prompt contains. No assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.concurrency import MODEL, PROMPTS  # noqa: E402

PAD = 0


def _model(export: Path, pad: int | None) -> Any:
    import onnxruntime_genai as og

    config = og.Config(str(export))
    if pad is not None:
        config.overlay(json.dumps({"model": {"pad_token_id": pad}}))
    return og.Model(config)


def alone(model: Any, ids: list[int], n: int, eos: int) -> list[int]:
    """Greedy answer of one prompt in a batch of 1."""
    import numpy as np
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + n, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(np.asarray(ids, dtype=np.int32))
    out: list[int] = []
    while len(out) < n and not gen.is_done():
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
        if out[-1] == eos:
            break
    return out


def batched(
    model: Any, prompts: list[list[int]], n: int, eos: int, *, right: bool
) -> tuple[list[list[int]], float, float]:
    """Greedy answers of all prompts as one padded batch; (answers, seconds to first tokens, seconds in all)."""
    import numpy as np
    import onnxruntime_genai as og

    width = max(map(len, prompts))
    grid = np.full((len(prompts), width), PAD, dtype=np.int32)
    for i, ids in enumerate(prompts):
        if right:
            grid[i, : len(ids)] = ids
        else:
            grid[i, width - len(ids) :] = ids
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=width + n, do_sample=False, batch_size=len(prompts))
    gen = og.Generator(model, params)
    t0 = time.perf_counter()
    gen.append_tokens(grid)
    outs: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    first = 0.0
    for _ in range(n):
        gen.generate_next_token()
        tokens = gen.get_next_tokens()
        first = first or time.perf_counter() - t0
        for i, token in enumerate(tokens):
            if not done[i]:
                outs[i].append(int(token))
                done[i] = int(token) == eos
        if all(done) or gen.is_done():
            break
    return outs, first, time.perf_counter() - t0


def compare(ref: list[list[int]], got: list[list[int]]) -> str:
    prefixes = []
    for a, b in zip(ref, got, strict=True):
        k = 0
        while k < min(len(a), len(b)) and a[k] == b[k]:
            k += 1
        prefixes.append(k)
    same = sum(a == b for a, b in zip(ref, got, strict=True))
    first = sum(k == 0 for k in prefixes)
    mean = sum(prefixes) / len(ref)
    return f"identical {same}/{len(ref)}, mean matching prefix {mean:.1f} tokens, differ at first token {first}"


def costs(model: Any, prompts: list[list[int]], batch: int, steps: int = 32) -> tuple[float, float]:
    """(prefill seconds, seconds per decode step) for the first ``batch`` prompts, right-padded."""
    import numpy as np
    import onnxruntime_genai as og

    rows = prompts[:batch]
    width = max(map(len, rows))
    grid = np.full((batch, width), PAD, dtype=np.int32)
    for i, ids in enumerate(rows):
        grid[i, : len(ids)] = ids
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=width + steps + 1, do_sample=False, batch_size=batch)
    gen = og.Generator(model, params)
    t0 = time.perf_counter()
    gen.append_tokens(grid)
    gen.generate_next_token()
    t1 = time.perf_counter()
    for _ in range(steps):
        gen.generate_next_token()
    return t1 - t0, (time.perf_counter() - t1) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", help="another export of the same model (default: the catalogue's)")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    from inference.artifacts import TOKENIZER_DIR, default_cache_dir, export_dir
    from inference.catalogue import OnnxModel, load_catalogue

    spec = load_catalogue().get(MODEL)
    if not isinstance(spec, OnnxModel):
        raise SystemExit(f"{MODEL} is not an ONNX model in config/models.yaml")
    if args.precision:
        spec = spec.model_copy(update={"precision": args.precision})
    export = export_dir(spec, default_cache_dir())
    if not (export / "genai_config.json").is_file():
        raise SystemExit(f"no genai export at {export}; run `python -m bot models prepare`")
    tokenizer = AutoTokenizer.from_pretrained(export / TOKENIZER_DIR)
    eos = int(json.loads((export / "genai_config.json").read_text())["model"]["eos_token_id"])
    n = args.tokens
    chat: list[list[int]] = [
        list(tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True))
        for q in PROMPTS
    ]
    if any(PAD in ids for ids in chat):
        raise SystemExit(f"a prompt contains the pad id {PAD}")
    print(f"export {export.name}, {len(chat)} prompts of {min(map(len, chat))}-{max(map(len, chat))} tokens, "
          f"{n} new tokens, load {os.getloadavg()[0]:.2f}")  # fmt: skip

    model = _model(export, PAD)
    # Equal length, no padding: the user message's tokens cut to the shortest one's.
    raw = [tokenizer(q)["input_ids"] for q in PROMPTS]
    shortest = min(map(len, raw))
    frame = list(tokenizer.apply_chat_template([{"role": "user", "content": "X"}], add_generation_prompt=True))
    at = frame.index(tokenizer("X")["input_ids"][0])
    equal = [frame[:at] + r[:shortest] + frame[at + 1 :] for r in raw]
    ref_equal = [alone(model, ids, n, eos) for ids in equal]
    print("equal length, no padding:", compare(ref_equal, batched(model, equal, n, eos, right=False)[0]))
    t0 = time.perf_counter()
    ref = [alone(model, ids, n, eos) for ids in chat]
    single_s = time.perf_counter() - t0
    print("left-padded: ", compare(ref, batched(model, chat, n, eos, right=False)[0]))
    out, first_s, batch_s = batched(model, chat, n, eos, right=True)
    print("right-padded:", compare(ref, out))

    costs(model, chat, 1, 2)  # warm-up
    p1, d1 = costs(model, chat, 1)
    p16, d16 = costs(model, chat, len(chat))
    print(f"batch 1: prefill {p1 * 1000:.0f} ms, decode step {d1 * 1000:.1f} ms ({1 / d1:.0f} tok/s); "
          f"batch {len(chat)}: prefill {p16 * 1000:.0f} ms ({p16 / p1:.1f}x batch 1's), "
          f"decode step {d16 * 1000:.1f} ms ({len(chat) / d16:.0f} tok/s)")  # fmt: skip
    single_tokens, batch_tokens = sum(map(len, ref)), sum(map(len, out))
    single_rate, batch_rate = single_tokens / single_s, batch_tokens / batch_s
    print(f"one after another: {single_tokens} tokens in {single_s:.2f} s = {single_rate:.1f} tok/s; "
          f"one right-padded batch: {batch_tokens} tokens in {batch_s:.2f} s = {batch_rate:.1f} tok/s "
          f"({batch_rate / single_rate:.2f}x), first tokens of all rows after {first_s:.2f} s; "
          f"load {os.getloadavg()[0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
