"""The cost of structure on the small tier: constrained vs unconstrained decoding, side by side.

    python bench/constraints.py                  # SmolLM2 on onnxruntime-genai (the small tier), 3 rounds
    python bench/constraints.py --libraries      # also: logits-processor libraries on the PyTorch tier

For each prompt the constrained answer (JSON Schema, a choice of labels, a regular expression; enforced by
llguidance masking genai's logits, inference/backends/guidance.py) is timed, then the same prompt
unconstrained for the same number of decoding steps, so both sides pay the same prefill and the same
number of forward passes: the difference is what guidance costs (grammar compilation, a mask per step).
The order alternates every round, so a busy neighbour on the machine slows both alike. Reported: medians
of steps/s per side, the slowdown, and how many constrained answers validated (the guarantee: 100%).

``--libraries`` times the candidates for the transformers tier (llguidance, xgrammar, lm-format-enforcer,
whichever are installed) on the same JSON prompts through ``model.generate``: tokens/s, the one-off
set-up per tokenizer and per schema, and validity. That is how the README's choice was made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from inference.structured import choice_constraint, json_constraint, regex_constraint, validate  # noqa: E402
from inference.types import ChatMessage, Constraint, GenerationParams  # noqa: E402

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 24},
        "languages": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "age", "city", "languages"],
    "additionalProperties": False,
}
#: case -> (constraint, prompts). The JSON prompts ask for what the schema describes, as /json would.
CASES: dict[str, tuple[Constraint, list[str]]] = {
    "json_schema": (
        json_constraint(PERSON),
        [
            "Ann is 30, lives in Paris and speaks French and English. Give her record as JSON.",
            "Describe Bob (41, Rome, speaks Italian) as a JSON object.",
            "A person: Chen, 25, from Beijing, speaks Mandarin. Reply with JSON.",
            "Make up a person record in JSON: name, age, city and languages.",
        ],
    ),
    "choice": (
        choice_constraint(["positive", "negative", "neutral"]),
        [
            "Classify the sentiment (positive, negative or neutral): I loved every minute of it.",
            "Classify the sentiment (positive, negative or neutral): The food was cold and late.",
            "Classify the sentiment (positive, negative or neutral): It opens at nine.",
            "Classify the sentiment (positive, negative or neutral): Best purchase this year!",
        ],
    ),
    "regex": (
        regex_constraint(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
        [
            "On what date did the Apollo 11 crew land on the Moon? Answer as YYYY-MM-DD.",
            "Write the date of Christmas Day 2024 as YYYY-MM-DD.",
            "What is the first day of the year 2000, as YYYY-MM-DD?",
            "Give today's date in ISO format.",
        ],
    ),
}


@dataclass
class Side:
    rates: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    valid: int = 0
    runs: int = 0


async def _timed(backend: Any, prompt: str, params: GenerationParams) -> tuple[str, int, float]:
    """(text, decoding steps including the one that chose EOS, wall seconds including prefill)."""
    started = time.perf_counter()
    text = await backend.stream([ChatMessage("user", prompt)], params).text()
    seconds = time.perf_counter() - started
    run = backend.last_run
    steps = run.generated_tokens + (1 if run.finish_reason == "eos" else 0)
    return text, steps, seconds


async def _small_tier(rounds: int, max_tokens: int, cache_dir: Path | None) -> dict[str, tuple[Side, Side]]:
    from inference.artifacts import default_cache_dir
    from inference.backends.onnx import OnnxBackend
    from inference.catalogue import OnnxModel, load_catalogue

    spec = load_catalogue().get("smollm2-onnx")
    assert isinstance(spec, OnnxModel)
    backend = OnnxBackend("smollm2-onnx", spec, cache_dir or default_cache_dir())
    await backend.start()
    print(f"small tier: {spec.source} on {backend.provider} ({spec.runtime}, {spec.precision})", file=sys.stderr)
    results = {case: (Side(), Side()) for case in CASES}
    for rnd in range(rounds + 1):  # round 0 warms up (and compiles nothing twice later)
        for case, (constraint, prompts) in CASES.items():
            guided, free = results[case]
            for i, prompt in enumerate(prompts):
                constrained = GenerationParams(max_new_tokens=max_tokens, constraint=constraint)
                order = [True, False] if (rnd + i) % 2 == 0 else [False, True]
                steps = 0
                # The constrained run decides the length; the free run repeats it, so it must come first.
                if not order[0]:
                    text, steps, _ = await _timed(backend, prompt, constrained)
                for is_guided in order:
                    if is_guided:
                        text, steps, seconds = await _timed(backend, prompt, constrained)
                        side = guided
                        try:
                            validate(constraint, text)
                            ok = True
                        except Exception:
                            ok = False
                    else:
                        params = GenerationParams(max_new_tokens=max(1, steps), stop=())
                        _, free_steps, seconds = await _timed(backend, prompt, params)
                        side, ok = free, True
                    if rnd == 0:
                        continue
                    side.runs += 1
                    side.valid += ok
                    n = steps if is_guided else free_steps
                    side.steps.append(n)
                    side.rates.append(n / seconds)
        print(f"round {rnd}/{rounds} done", file=sys.stderr)
    await backend.aclose()
    return results


def _small_tier_table(results: dict[str, tuple[Side, Side]]) -> str:
    rows = [
        "| constraint | steps (median) | constrained steps/s | unconstrained steps/s | slower by | valid |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case, (guided, free) in results.items():
        g, f = statistics.median(guided.rates), statistics.median(free.rates)
        slow = (f - g) / f * 100
        rows.append(
            f"| {case} | {statistics.median(guided.steps):g} | {g:.1f} | {f:.1f} | {slow:.0f}% "
            f"| {guided.valid}/{guided.runs} |"
        )
    return "\n".join(rows)


# --- the transformers tier: which logits-processor library -------------------------------------------------


def _libraries(max_tokens: int, rounds: int) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList

    from inference.artifacts import default_cache_dir, model_dir
    from inference.catalogue import TransformersModel, load_catalogue

    spec = load_catalogue().get("smollm2-local")
    assert isinstance(spec, TransformersModel)
    source = model_dir(spec.source, default_cache_dir())
    tok = AutoTokenizer.from_pretrained(source)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    n_vocab = int(model.config.vocab_size)
    eos = [int(tok.convert_tokens_to_ids("<|im_end|>"))]
    constraint, prompts = CASES["json_schema"]
    schema = constraint.schema or {}

    makers: dict[str, Any] = {"unconstrained": (0.0, lambda n: [])}
    from inference.backends.guidance import GuidanceTokenizers, guidance_processor

    tokenizers = GuidanceTokenizers()
    t = time.perf_counter()
    tokenizers.get(tok, n_vocab=n_vocab, eos_ids=eos)
    makers["llguidance"] = (
        time.perf_counter() - t,
        lambda n: [guidance_processor(tokenizers, tok, constraint, n_vocab=n_vocab, eos_ids=eos, prompt_len=n)],
    )
    try:
        import xgrammar as xgr

        t = time.perf_counter()
        compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tok, vocab_size=n_vocab, stop_token_ids=eos))
        makers["xgrammar"] = (
            time.perf_counter() - t,
            lambda n: [xgr.contrib.hf.LogitsProcessor(compiler.compile_json_schema(json.dumps(schema)))],
        )
    except ImportError:
        print("xgrammar is not installed: skipped", file=sys.stderr)
    try:
        from lmformatenforcer import JsonSchemaParser
        from lmformatenforcer.integrations.transformers import (
            build_token_enforcer_tokenizer_data,
            build_transformers_prefix_allowed_tokens_fn,
        )
        from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor

        t = time.perf_counter()
        data = build_token_enforcer_tokenizer_data(tok)
        makers["lm-format-enforcer"] = (
            time.perf_counter() - t,
            lambda n: [
                PrefixConstrainedLogitsProcessor(
                    build_transformers_prefix_allowed_tokens_fn(data, JsonSchemaParser(schema)), 1
                )
            ],
        )
    except ImportError:
        print("lm-format-enforcer is not installed: skipped", file=sys.stderr)

    stats: dict[str, dict[str, list[float]]] = {name: {"rate": [], "setup": [], "valid": []} for name in makers}
    for rnd in range(rounds + 1):
        for i, prompt in enumerate(prompts):
            names = list(makers)
            names = names[i % len(names) :] + names[: i % len(names)]  # rotate: a busy neighbour hits all alike
            chat = [{"role": "user", "content": prompt}]
            text = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
            for name in names:
                t = time.perf_counter()
                processors = makers[name][1](ids.shape[1])
                setup = time.perf_counter() - t
                t = time.perf_counter()
                with torch.inference_mode():
                    out = model.generate(
                        ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False,
                        eos_token_id=eos, pad_token_id=0, logits_processor=LogitsProcessorList(processors),
                    )  # fmt: skip
                seconds = time.perf_counter() - t
                new = out[0, ids.shape[1] :].tolist()
                try:
                    validate(constraint, tok.decode(new, skip_special_tokens=True))
                    ok = 1.0
                except Exception:
                    ok = 0.0
                if rnd:
                    stats[name]["rate"].append(len(new) / seconds)
                    stats[name]["setup"].append(setup)
                    stats[name]["valid"].append(ok)
        print(f"libraries: round {rnd}/{rounds} done", file=sys.stderr)
    base = statistics.median(stats["unconstrained"]["rate"])
    rows = [
        "| transformers tier, JSON Schema | tokens/s | vs unconstrained | set-up per tokenizer | per schema | valid |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in stats.items():
        rate = statistics.median(s["rate"])
        valid = f"{int(sum(s['valid']))}/{len(s['valid'])}" if name != "unconstrained" else "-"
        rows.append(
            f"| {name} | {rate:.1f} | {(rate - base) / base * 100:+.0f}% | {makers[name][0] * 1000:.0f} ms "
            f"| {statistics.median(s['setup']) * 1000:.0f} ms | {valid} |"
        )
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds over all prompts (after a warm-up)")
    ap.add_argument("--tokens", type=int, default=64, help="max new tokens of a constrained answer")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--libraries", action="store_true", help="also compare logits-processor libraries (PyTorch)")
    ap.add_argument("--readme", action="store_true", help="also write the table into README.md")
    args = ap.parse_args()

    table = _small_tier_table(asyncio.run(_small_tier(args.rounds, args.tokens, args.cache_dir)))
    if args.libraries:
        table += "\n\n" + _libraries(min(args.tokens, 48), args.rounds)
    print(table)
    if args.readme:
        from bench._readme import write_section

        write_section("constraints", table)


if __name__ == "__main__":
    main()
