"""Structured output: schema checks, validation, one repair attempt, classification with scores."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inference.catalogue import Catalogue, RoutingPolicy, load_routing
from inference.router import Router
from inference.serving.service import Switchboard
from inference.structured import (
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    InvalidOutput,
    SchemaError,
    check_schema,
    choice_constraint,
    classify,
    decoding_schema,
    generate,
    json_constraint,
    regex_constraint,
    validate,
)
from inference.types import ChatMessage, Classification, Request, Tier
from tests.fakes.backends import ScriptedBackend, fake_catalogue
from tests.fakes.openai_server import FakeOpenAIServer, ok, openai_server

__all__ = ["openai_server"]  # pytest fixture, imported for the tests below

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


# --- check_schema: the supported subset, named refusals, size limits ---------------------------------


def test_a_schema_in_the_subset_is_accepted_as_a_dict_or_as_json_text() -> None:
    assert check_schema(PERSON) == PERSON
    assert check_schema(json.dumps(PERSON)) == PERSON
    nested = {"type": "array", "items": {"anyOf": [{"type": "string", "pattern": "^[a-z]+$"}, {"const": 3}]}}
    assert check_schema(nested) == nested


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "must be a JSON object, not an array"),
        ({"type": "strng"}, "not a valid JSON Schema at /type"),
        ({"minLength": -1}, "not a valid JSON Schema at /minLength"),
        ({"properties": {"when": {"type": "string", "format": "date"}}}, "'format' at /properties/when"),
        ({"$ref": "#/$defs/x", "$defs": {"x": {}}}, "unsupported keyword '$ref' at /"),
        ({"allOf": [{"type": "string"}]}, "unsupported keyword 'allOf'"),
        ({"type": "object", "properties": {"a": {"pattern": "(?=x)"}}}, "/properties/a/pattern uses a lookahead"),
        ({"pattern": "(a"}, "at /pattern: '(a' is not a 'regex'"),
        ({"minimum": 5, "maximum": 1}, "minimum is above maximum"),
        ({"minItems": 3, "maxItems": 1}, "minItems is above maxItems"),
        ({"required": ["x"], "additionalProperties": False}, "'x' is required"),
    ],
)
def test_invalid_or_unsupported_schemas_are_refused_by_name(schema: object, words: str) -> None:
    with pytest.raises(SchemaError, match=None) as err:
        check_schema(schema)
    assert words in str(err.value)


def test_size_limits_bytes_depth_and_properties() -> None:
    big = {"type": "object", "description": "x" * MAX_SCHEMA_BYTES}
    with pytest.raises(SchemaError, match="too large"):
        check_schema(big)
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(MAX_SCHEMA_DEPTH):
        deep = {"type": "array", "items": deep}
    with pytest.raises(SchemaError, match="nested too deeply at /items/items"):
        check_schema(deep)
    wide = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(65)}}
    with pytest.raises(SchemaError, match="too many properties"):
        check_schema(wide)


def test_choice_and_regex_builders_refuse_what_cannot_be_enforced() -> None:
    assert choice_constraint([" yes", "no "]).choices == ("yes", "no")
    for bad, words in [([], "at least one"), (["a", ""], "empty"), (["a", "a"], "twice: a"), ("ab", "not one")]:
        with pytest.raises(SchemaError, match=words):
            choice_constraint(bad)
    assert regex_constraint(r"[A-Z]{3}-\d+").pattern == r"[A-Z]{3}-\d+"
    assert regex_constraint(r"\(?=literal").pattern  # an escaped paren is no lookahead
    for bad, words in [("(?<=a)b", "lookbehind"), (r"(a)\1", "backreference"), ("[", "not a valid"), ("", "empty")]:
        with pytest.raises(SchemaError, match=words):
            regex_constraint(bad)


# --- validate --------------------------------------------------------------------------------------


def test_validate_json_parses_checks_and_tolerates_a_whole_answer_fence() -> None:
    person = json_constraint(PERSON)
    assert validate(person, '{"name": "Ann", "age": 30}') == {"name": "Ann", "age": 30}
    assert validate(person, '```json\n{"name": "Ann", "age": 30}\n```') == {"name": "Ann", "age": 30}
    for text, words in [
        ('{"name": "Ann"}', "at the top level: 'age' is a required property"),
        ('{"name": "Ann", "age": -1}', "at /age"),
        ('{"name": "Ann", "age": 3', "not valid JSON"),
        ("", "empty"),
        ('{"name": "Ann", "age": NaN}', "not valid JSON"),
        ('Sure! {"name": "Ann", "age": 30}', "not valid JSON"),
    ]:
        with pytest.raises(InvalidOutput, match=None) as err:
            validate(person, text)
        assert words in str(err.value)


def test_validate_regex_is_a_full_match_and_choice_an_exact_label() -> None:
    code = regex_constraint(r"[A-Z]{3}-\d+")
    assert validate(code, " ABC-12\n") == "ABC-12"
    with pytest.raises(InvalidOutput, match="does not match"):
        validate(code, "ABC-12 and more")
    labels = choice_constraint(["spam", "ham"])
    assert validate(labels, "  ham\n") == "ham"
    for text in ["Ham", "ham.", "spam ham", ""]:
        with pytest.raises(InvalidOutput, match="is not one of: spam, ham"):
            validate(labels, text)


# --- generate and classify through the board --------------------------------------------------------


class Fixed:
    def classify(self, request: Request) -> Classification:
        return Classification(task="grammar", confidence=0.9, difficulty=0.1, prompt_tokens=5)


def scripted_board(backend: ScriptedBackend) -> Switchboard:
    base = load_routing()
    policy = RoutingPolicy(tiers=base.tiers, models={Tier.SMALL: "small-fake", Tier.LARGE: "large-fake"})
    router = Router(Fixed(), policy, fake_catalogue())
    return Switchboard(router, cache_dir=None, backend_factory=lambda name, spec: backend)  # type: ignore[arg-type]


ASK = [ChatMessage("user", "Ann is 30. As JSON please.")]


async def test_generate_returns_the_parsed_document() -> None:
    backend = ScriptedBackend.playing(['{"name": "Ann", ', '"age": 30}'])
    board = scripted_board(backend)
    result = await generate(board, board.route(Request("x")), ASK, json_constraint(PERSON))
    assert result.value == {"name": "Ann", "age": 30} and not result.repaired
    assert len(backend.calls) == 1


async def test_one_repair_shows_the_model_its_output_and_the_error() -> None:
    backend = ScriptedBackend.playing(["{'name': 'Ann'}"], ['{"name": "Ann", "age": 30}'])
    board = scripted_board(backend)
    result = await generate(board, board.route(Request("x")), ASK, json_constraint(PERSON))
    assert result.repaired and result.value == {"name": "Ann", "age": 30}
    repair = backend.calls[1]
    assert repair[:-2] == ASK and repair[-2] == ChatMessage("assistant", "{'name': 'Ann'}")
    assert "not valid JSON" in repair[-1].content and '"required":["name","age"]' in repair[-1].content


async def test_output_that_stays_invalid_is_an_honest_error_never_a_result() -> None:
    backend = ScriptedBackend.playing(["maybe"], ["perhaps"])
    board = scripted_board(backend)
    with pytest.raises(InvalidOutput, match="after one repair attempt: 'perhaps' is not one of: yes, no") as err:
        await generate(board, board.route(Request("x")), ASK, choice_constraint(["yes", "no"]))
    assert len(backend.calls) == 2  # exactly one repair
    assert not err.value.fallback  # a bigger model is not silently asked instead


async def test_classify_single_label_without_logprobs_scores_one_and_zero() -> None:
    backend = ScriptedBackend.playing([" negative\n"])
    board = scripted_board(backend)
    result = await classify(board, board.route(Request("x")), "awful film", ["positive", "negative"])
    assert result.labels == ["negative"] and result.scores == {"positive": 0.0, "negative": 1.0}
    system = backend.calls[0][0].content
    assert "exactly one of these labels" in system and "positive, negative" in system


async def test_classify_multi_returns_a_subset_in_label_order_without_duplicates() -> None:
    backend = ScriptedBackend.playing(['["urgent", "billing", "urgent"]'])
    board = scripted_board(backend)
    result = await classify(board, board.route(Request("x")), "pay now!", ["billing", "tech", "urgent"], multi=True)
    assert result.labels == ["billing", "urgent"]
    assert result.scores == {"billing": 1.0, "tech": 0.0, "urgent": 1.0}


async def test_classify_never_returns_a_label_outside_the_set() -> None:
    backend = ScriptedBackend.playing(["neutral"], ["mixed"])
    board = scripted_board(backend)
    with pytest.raises(InvalidOutput):
        await classify(board, board.route(Request("x")), "meh", ["positive", "negative"])


# --- on an OpenAI-compatible server: response_format, logprobs, repair --------------------------------


def server_board(server: FakeOpenAIServer) -> Switchboard:
    common = {"base_url": server.base_url, "model": "m", "retry": {"max_attempts": 1}}
    catalogue = Catalogue.model_validate(
        {
            "models": {
                "small": {"kind": "openai", "tier": "small", **common},
                "large": {"kind": "openai", "tier": "large", **common},
            }
        }
    )
    base = load_routing()
    policy = RoutingPolicy(tiers=base.tiers, models={Tier.SMALL: "small", Tier.LARGE: "large"})
    return Switchboard(Router(Fixed(), policy, catalogue), cache_dir=None)  # type: ignore[arg-type]


async def test_openai_json_goes_out_as_response_format_and_invalid_json_is_repaired(
    openai_server: FakeOpenAIServer,
) -> None:
    openai_server.script(ok('{"name": "Ann"'), ok('{"name": "Ann", "age": 30}'))
    board = server_board(openai_server)
    try:
        result = await generate(board, board.route(Request("x")), ASK, json_constraint(PERSON))
    finally:
        await board.aclose()
    assert result.value == {"name": "Ann", "age": 30} and result.repaired
    first, second = (r.body for r in openai_server.completions)
    expected = {"type": "json_schema", "json_schema": {"name": "answer", "schema": PERSON, "strict": True}}
    assert first["response_format"] == expected and second["response_format"] == expected
    assert second["messages"][-2] == {"role": "assistant", "content": '{"name": "Ann"'}


async def test_openai_server_that_never_complies_gives_invalid_output(openai_server: FakeOpenAIServer) -> None:
    openai_server.default = ok("I cannot do JSON, sorry.")
    board = server_board(openai_server)
    try:
        with pytest.raises(InvalidOutput):
            await generate(board, board.route(Request("x")), ASK, json_constraint(PERSON))
    finally:
        await board.aclose()
    assert len(openai_server.completions) == 2


async def test_openai_classify_scores_come_from_logprobs(openai_server: FakeOpenAIServer) -> None:
    # The model chose "neg" + "ative" (p = 0.8 * 1.0); "pos" was its runner-up at the first step (p = 0.15).
    logprobs = (("neg", -0.2231, {"neg": -0.2231, "pos": -1.8971, "ne": -5.0}), ("ative", 0.0, {"ative": 0.0}))
    openai_server.script(ok("negative", logprobs=logprobs))
    board = server_board(openai_server)
    try:
        result = await classify(board, board.route(Request("x")), "awful", ["positive", "negative", "neutral"])
    finally:
        await board.aclose()
    assert result.labels == ["negative"]
    assert result.scores == {"positive": 0.15, "negative": 0.8, "neutral": 0.0}  # "ne" starts two labels: no score
    body = openai_server.completions[0].body
    assert body["logprobs"] is True and body["top_logprobs"] == 5
    assert "guided_choice" not in body  # this endpoint did not opt in to vLLM's fields


def test_the_decoder_writes_only_declared_properties_yet_stays_within_the_schema() -> None:
    open_schema = {
        "type": "object",
        "properties": {"a": {"type": "object", "properties": {"b": {"const": {"x": 1}}}}},
        "required": ["a"],
    }
    tight = decoding_schema(open_schema)
    assert tight["additionalProperties"] is False
    assert tight["properties"]["a"]["additionalProperties"] is False
    assert tight["properties"]["a"]["properties"]["b"] == {"const": {"x": 1}}  # values are data, untouched
    assert "additionalProperties" not in open_schema  # the caller's schema is not modified
    # Required names that are not declared must stay possible; an explicit choice is kept.
    assert "additionalProperties" not in decoding_schema({"properties": {}, "required": ["z"]})
    assert decoding_schema({"properties": {}, "additionalProperties": True})["additionalProperties"] is True


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        (r"\bcat\b", "a word boundary"),
        (r"done\Z", r"the Python-only \Z anchor"),
        (r"(?>ab)c", "an atomic group"),
        (r"a++b", "a possessive quantifier"),
        (r"(?P<x>a)(?P=x)", "a backreference"),
    ],
)
def test_python_only_regex_features_are_refused_by_name(pattern: str, words: str) -> None:
    with pytest.raises(SchemaError, match="cannot enforce") as err:
        regex_constraint(pattern)
    assert words in str(err.value)
    for fine in (r"[\b+]x", r"^a+?$", r"(?i)yes|no", r"(?P<n>[0-9]+)"):
        assert regex_constraint(fine).pattern == fine
