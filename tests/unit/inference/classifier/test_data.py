"""The labelled data: well formed, and no evaluation text in the training file.

Compared by normalised text (case and whitespace); failures give counts, never the texts, so an independent
evaluation set stays unseen by whoever reads the test output.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inference.classifier.recipe import DATA_DIR
from inference.classifier.train import load_examples
from inference.types import TASKS

INDEPENDENT = Path(__file__).resolve().parents[4] / "bench" / "data" / "router_independent.jsonl"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _train_texts() -> set[str]:
    return {_norm(e.text) for e in load_examples(DATA_DIR / "train.jsonl")}


def test_every_task_has_training_and_held_out_rows() -> None:
    train, held = load_examples(DATA_DIR / "train.jsonl"), load_examples(DATA_DIR / "heldout.jsonl")
    for task in TASKS:
        assert sum(e.task == task for e in train) >= 100, task
        assert sum(e.task == task for e in held) >= 25, task


def test_no_held_out_text_is_in_training() -> None:
    train = _train_texts()
    # The empty message with an image is in both files on purpose.
    leaked = [e for e in load_examples(DATA_DIR / "heldout.jsonl") if _norm(e.text) and _norm(e.text) in train]
    assert not leaked, f"{len(leaked)} held-out rows also in train.jsonl"


@pytest.mark.skipif(not INDEPENDENT.exists(), reason="no independent evaluation set yet")
def test_no_independent_text_is_in_training() -> None:
    train = _train_texts()
    rows = load_examples(INDEPENDENT)
    leaked = sum(1 for e in rows if _norm(e.text) and _norm(e.text) in train)
    assert leaked == 0, f"{leaked} of {len(rows)} independent rows also in train.jsonl"


def test_training_rows_are_unique() -> None:
    rows = [_norm(e.text) for e in load_examples(DATA_DIR / "train.jsonl")]
    assert len(rows) == len(set(rows)), f"{len(rows) - len(set(rows))} duplicate training rows"
