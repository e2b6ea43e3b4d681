"""Golden values of the classifier's lexical features.

The features' definitions key the classifier's artefacts (:mod:`inference.classifier.recipe`), but a computed
feature's code does not: if this test fails because a feature changed on purpose, bump ``Recipe.version`` in
inference/classifier/recipe.py (so the next ``models prepare`` retrains) and update the table below.
"""

from __future__ import annotations

import pytest

from inference.classifier import recipe
from inference.classifier.features import FEATURE_NAMES, FEATURES, lexical_features

#: (text, prompt tokens, {feature: value} for every non-zero feature)
GOLDEN: list[tuple[str, int, dict[str, float]]] = [
    ("hey there, thanks!", 5, {"greeting": 1.0, "length": 0.235}),
    ("hey there, thanks!", 400, {"greeting": 1.0, "length": 0.7861, "long_input": 1.0}),
    ("Translate 'good morning' into French", 5, {"transform_words": 1.0, "length": 0.235}),
    ("Translate 'good morning' into French", 400, {"transform_words": 1.0, "length": 0.7861, "long_input": 1.0}),
    (
        "```python\ndef f(x):\n    return x\n```\nwhy does this fail? Traceback: ValueError",
        5,
        {"code_fence": 1.0, "code_syntax": 1.0, "error_trace": 1.0, "prog_words": 1.0, "length": 0.235},
    ),
    (
        "```python\ndef f(x):\n    return x\n```\nwhy does this fail? Traceback: ValueError",
        400,
        {
            "code_fence": 1.0,
            "code_syntax": 1.0,
            "error_trace": 1.0,
            "prog_words": 1.0,
            "length": 0.7861,
            "long_input": 1.0,
        },
    ),
    ("Answer with only yes or no: is the sky blue?", 5, {"answer_only": 1.0, "question_mark": 1.0, "length": 0.235}),
    (
        "Answer with only yes or no: is the sky blue?",
        400,
        {"answer_only": 1.0, "question_mark": 1.0, "length": 0.7861, "long_input": 1.0},
    ),
    ("According to the pinned FAQ, how do refunds work?", 5, {"doc_ref": 1.0, "question_mark": 1.0, "length": 0.235}),
    (
        "According to the pinned FAQ, how do refunds work?",
        400,
        {"doc_ref": 1.0, "question_mark": 1.0, "length": 0.7861, "long_input": 1.0},
    ),
    (
        "remind me in 20 minutes to stretch, and what's the weather right now?",
        5,
        {"live_data": 1.0, "question_mark": 1.0, "long_output": 1.0, "numbers": 0.125, "length": 0.235},
    ),
    (
        "remind me in 20 minutes to stretch, and what's the weather right now?",
        400,
        {
            "live_data": 1.0,
            "question_mark": 1.0,
            "long_output": 1.0,
            "numbers": 0.125,
            "length": 0.7861,
            "long_input": 1.0,
        },
    ),
    (
        "every morning post the top 3 questions then summarize them",
        5,
        {"agentic": 1.0, "transform_words": 1.0, "numbers": 0.125, "length": 0.235},
    ),
    (
        "every morning post the top 3 questions then summarize them",
        400,
        {"agentic": 1.0, "transform_words": 1.0, "numbers": 0.125, "length": 0.7861, "long_input": 1.0},
    ),
    (
        "Prove that the square root of 2 is irrational, step by step",
        5,
        {"proof": 1.0, "reasoning": 1.0, "numbers": 0.125, "length": 0.235},
    ),
    (
        "Prove that the square root of 2 is irrational, step by step",
        400,
        {"proof": 1.0, "reasoning": 1.0, "numbers": 0.125, "length": 0.7861, "long_input": 1.0},
    ),
    (
        "A train leaves at 3 pm going 60 mph; how far has it gone after 2.5 hours?",
        5,
        {"question_mark": 1.0, "word_problem": 1.0, "numbers": 0.375, "length": 0.235},
    ),
    (
        "A train leaves at 3 pm going 60 mph; how far has it gone after 2.5 hours?",
        400,
        {"question_mark": 1.0, "word_problem": 1.0, "numbers": 0.375, "length": 0.7861, "long_input": 1.0},
    ),
    ("Write a detailed 2000-word essay on rivers", 5, {"long_output": 1.0, "numbers": 0.125, "length": 0.235}),
    (
        "Write a detailed 2000-word essay on rivers",
        400,
        {"long_output": 1.0, "numbers": 0.125, "length": 0.7861, "long_input": 1.0},
    ),
    (
        "Classify these 200 reviews as positive or negative",
        5,
        {"label_words": 1.0, "many_items": 1.0, "numbers": 0.125, "length": 0.235},
    ),
    (
        "Classify these 200 reviews as positive or negative",
        400,
        {"label_words": 1.0, "many_items": 1.0, "numbers": 0.125, "length": 0.7861, "long_input": 1.0},
    ),
    ("describe this screenshot please", 5, {"media_words": 1.0, "length": 0.235}),
    ("describe this screenshot please", 400, {"media_words": 1.0, "length": 0.7861, "long_input": 1.0}),
]

BUMP = "lexical features changed: bump Recipe.version in inference/classifier/recipe.py and update GOLDEN"


@pytest.mark.parametrize(("text", "tokens", "expected"), GOLDEN)
def test_lexical_features_match_their_golden_values(text: str, tokens: int, expected: dict[str, float]) -> None:
    values, _signals = lexical_features(text, tokens)
    got = {name: round(float(v), 4) for name, v in zip(FEATURE_NAMES, values, strict=True) if v}
    assert got == expected, BUMP


def test_the_artefact_key_follows_feature_definitions_not_source_formatting(monkeypatch: pytest.MonkeyPatch) -> None:
    before = recipe.artifact_key()
    # A changed pattern is a new recipe (same name, same signal, another regex).
    changed = list(FEATURES)
    first = changed[0]
    changed[0] = type(first)(first.name, first.signal, first.pattern + "|zzz", first.flags)
    monkeypatch.setattr("inference.classifier.features.FEATURES", tuple(changed))
    recipe._recipe_fingerprint.cache_clear()
    try:
        assert recipe.artifact_key() != before
    finally:
        monkeypatch.undo()
        recipe._recipe_fingerprint.cache_clear()
    assert recipe.artifact_key() == before


def test_the_artefact_key_follows_the_build_packages_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    before = recipe.artifact_key()
    real = recipe._version
    monkeypatch.setattr(recipe, "_version", lambda p: "9.9.9" if p == "onnx" else real(p))
    recipe._recipe_fingerprint.cache_clear()
    try:
        assert recipe.artifact_key() != before
    finally:
        monkeypatch.undo()
        recipe._recipe_fingerprint.cache_clear()
