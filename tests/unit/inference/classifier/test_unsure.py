"""The unsure path: under the calibrated-confidence threshold, the nearest labelled examples settle the task."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from inference.catalogue import load_catalogue, load_routing
from inference.classifier.bank import ExampleBank
from inference.classifier.model import NEAREST_EXAMPLES, TaskClassifier, second_opinion
from inference.router import Router
from inference.types import TASKS, Attachment, Request


def _probs(**p: float) -> np.ndarray:
    rest = (1.0 - sum(p.values())) / (len(TASKS) - len(p))
    return np.array([p.get(t, rest) for t in TASKS])


def _agent_bank(embedding: np.ndarray, n: int = 8) -> ExampleBank:
    bank = ExampleBank(len(embedding))
    for _ in range(n):
        bank.add(embedding, "agent", False)
    return bank


EMB = np.eye(4, dtype=np.float32)[0]


def test_a_low_confidence_request_is_decided_by_the_bank() -> None:
    probs = _probs(chat=0.40, code=0.30)
    mixed, votes = second_opinion(probs, EMB, _agent_bank(EMB), unsure_below=0.6, k=8, weight=0.5)
    assert votes is not None and votes.task == "agent"
    assert TASKS[int(mixed.argmax())] == "agent"
    assert mixed.sum() == pytest.approx(1.0)


def test_a_confident_request_is_not_asked_about() -> None:
    probs = _probs(chat=0.90)
    mixed, votes = second_opinion(probs, EMB, _agent_bank(EMB), unsure_below=0.6, k=8, weight=0.5)
    assert votes is None and mixed is probs


def test_without_a_bank_the_head_decides() -> None:
    probs = _probs(chat=0.30)
    for bank in (None, ExampleBank(4)):
        mixed, votes = second_opinion(probs, EMB, bank, unsure_below=0.6, k=8, weight=0.5)
        assert votes is None and mixed is probs


def test_a_split_vote_leaves_a_clear_head_lead() -> None:
    bank = ExampleBank(4)
    for task in ("agent", "rag", "code", "tool_use"):
        bank.add(EMB, task, False)  # type: ignore[arg-type]
    mixed, votes = second_opinion(_probs(chat=0.55), EMB, bank, unsure_below=0.6, k=4, weight=0.5)
    assert votes is not None and TASKS[int(mixed.argmax())] == "chat"


# ---------------------------------------------------------------------------- with the real classifier


@pytest.fixture(scope="module")
def clf(prepared_classifier: Path) -> TaskClassifier:
    return TaskClassifier.load(prepared_classifier)


@pytest.mark.real_model
def test_the_classifier_exposes_its_embedding_and_asks_the_bank_only_when_unsure(clf: TaskClassifier) -> None:
    request = Request("translate 'good morning' into french")
    sure = clf.classify(request)
    assert sure.decided_by == "classifier" and sure.embedding is not None
    assert sure.embedding.shape == (clf.encoder_dim,)
    assert float(np.linalg.norm(sure.embedding)) == pytest.approx(1.0, abs=1e-3)

    bank, below = clf.bank, clf.unsure_below
    try:
        clf.bank = _agent_bank(sure.embedding)
        clf.unsure_below = 0.0  # never unsure: the bank is not asked
        assert clf.classify(request).task == sure.task
        clf.unsure_below = 1.01  # always unsure: the unanimous neighbours decide
        unsure = clf.classify(request)
        assert unsure.task == "agent" and unsure.decided_by == NEAREST_EXAMPLES
        assert any(s.startswith("unsure (") for s in unsure.signals)
        catalogue = load_catalogue()
        decision = Router(clf, load_routing(catalogue=catalogue), catalogue).decide(request, unsure)
        assert "decided by nearest examples" in decision.reason
        media = clf.classify(replace(request, attachments=(Attachment("a.png", "image/png"),)))
        assert media.task == "multimodal" and media.decided_by == "attachment"
        assert not any(s.startswith("unsure (") for s in media.signals)
    finally:
        clf.bank, clf.unsure_below = bank, below


@pytest.mark.real_model
def test_the_artefact_carries_a_temperature_and_a_bank_of_the_training_rows(clf: TaskClassifier) -> None:
    assert clf.bank is not None and len(clf.bank) == clf.meta["train_examples"]
    assert 0.1 < clf.temperature < 10.0
    assert clf.meta["train_metrics"]["calibration"]["temperature"] == pytest.approx(clf.temperature, rel=1e-3)
