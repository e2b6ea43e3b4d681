"""The scoring helpers of bench/tasks.py and the shape of its data sets (no model runs here)."""

from __future__ import annotations

import jsonschema
import pytest

from bench import tasks


@pytest.mark.parametrize(
    ("answer", "label", "match"),
    [
        ("mood_great", "mood_great", True),
        ("Mood great.", "mood_great", True),
        ("  GREET\n", "greet", True),
        ('"bot-challenge"', "bot_challenge", True),
        ("greet, I think", "greet", False),
        ("The label is greet.", "greet", False),
        ("", "greet", False),
    ],
)
def test_label_match_is_exact_after_normalising(answer: str, label: str, match: bool) -> None:
    assert tasks.label_match(answer, label) is match


def test_lenient_json_takes_the_fenced_or_embedded_object() -> None:
    assert tasks.lenient_json('Sure!\n```json\n{"a": 1}\n```\nDone.') == {"a": 1}
    assert tasks.lenient_json('Here it is: {"a": {"b": 2}} hope it helps') == {"a": {"b": 2}}
    with pytest.raises(ValueError):
        tasks.lenient_json("no json here")
    with pytest.raises(ValueError):
        tasks.lenient_json('{"a": 1')


def test_field_hits_compares_by_value() -> None:
    expected = {"name": "Maria Lopez", "age": 34, "price": 2.5, "ok": True, "items": ["eggs", "milk"]}
    got = {"name": "maria lopez", "age": 34.0, "price": 2.50, "ok": 1, "items": ["Milk", "eggs"]}
    # Everything matches except the boolean given as a number.
    assert tasks.field_hits(got, expected) == 4
    assert tasks.field_hits(["not", "a", "dict"], expected) == 0
    assert tasks.field_hits({"age": 35}, expected) == 0


def test_corpus_scores_rank_a_perfect_translation_first() -> None:
    refs = ["Saisissez une valeur valide.", "Le fichier soumis est vide."]
    perfect = tasks.corpus_scores(refs, refs)
    poor = tasks.corpus_scores(["Je suis un chat.", "Bonjour."], refs)
    assert perfect == (pytest.approx(100.0), pytest.approx(100.0))
    assert poor[0] < 50 and poor[1] < 10


def test_data_sets_are_well_formed() -> None:
    intents = tasks.load_jsonl("intents.jsonl")
    assert len(intents) == 68 and len({r["label"] for r in intents}) == 7
    translation = tasks.load_jsonl("translation.jsonl")
    assert len(translation) == 60 and {r["to"] for r in translation} == {"French", "German", "Spanish"}
    extraction = tasks.load_jsonl("extraction.jsonl")
    assert len(extraction) == 40
    for item in extraction:
        jsonschema.Draft202012Validator.check_schema(item["schema"])
        assert tasks.schema_valid(item["expected"], item["schema"]), item["text"]
    assert tasks.load_jsonl("intents.jsonl", 5) == intents[:5]
