"""A server's corrections over the real task classifier's embedding: a near-repeat of a corrected request takes
the correction, requests that are merely of the same task do not (the threshold in inference/router.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.catalogue import load_catalogue, load_routing
from inference.classifier import TaskClassifier
from inference.classifier.bank import ExampleBank
from inference.router import Router
from inference.types import Request, Tier

pytestmark = pytest.mark.real_model


def test_corrections_move_near_repeats_and_nothing_else(prepared_classifier: Path) -> None:
    classifier = TaskClassifier.load(prepared_classifier)
    catalogue = load_catalogue()
    router = Router(classifier, load_routing(catalogue=catalogue), catalogue)
    corrected = "what should I name my new hamster"
    before = router.route(Request(corrected))
    assert before.tier is Tier.SMALL  # a small chat request: the case "Ask the larger model" is for
    memory = ExampleBank(len(classifier.classify(Request(corrected)).embedding))
    memory.add(classifier.classify(Request(corrected)).embedding, before.task, True)

    for near in ("what should i name my new hamster?", "any name ideas for my new hamster"):
        decision = router.route(Request(near), memory=memory)
        assert decision.tier is Tier.LARGE and "preferred the larger model" in decision.reason, near
    for other in ("tell me a fun fact about octopuses", "how do I cook rice", "translate hello to french"):
        decision = router.route(Request(other), memory=memory)
        assert "corrected a similar request" not in decision.reason, other
