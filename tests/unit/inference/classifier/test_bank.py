"""ExampleBank: a cosine top-k vote over labelled embeddings, and its storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.classifier.bank import ExampleBank


def _unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def bank() -> ExampleBank:
    b = ExampleBank(3)
    b.add(_unit(1, 0, 0), "code", False)
    b.add(_unit(0.9, 0.1, 0), "code", True)
    b.add(_unit(0.8, 0.2, 0), "chat", False)
    b.add(_unit(0, 0, 1), "tool_use", False)
    return b


def test_the_nearest_examples_vote_by_similarity(bank: ExampleBank) -> None:
    votes = bank.nearest(_unit(1, 0.05, 0), k=3)
    assert [n.task for n in votes.neighbours] == ["code", "code", "chat"]
    assert votes.task == "code"
    assert votes.shares["code"] == pytest.approx(2 / 3, abs=0.02)  # three near-equal similarities
    assert sum(votes.shares.values()) == pytest.approx(1.0)
    assert votes.shares["tool_use"] == 0.0  # not among the 3 nearest
    assert 0.0 < votes.hard < 0.5  # one of three neighbours is hard
    assert votes.similarity == pytest.approx(float(_unit(1, 0.05, 0) @ _unit(1, 0, 0)), abs=1e-3)


def test_a_far_request_is_decided_by_what_is_near_it(bank: ExampleBank) -> None:
    assert bank.nearest(_unit(0, 0.1, 1), k=1).task == "tool_use"


def test_min_similarity_leaves_out_unrelated_examples(bank: ExampleBank) -> None:
    votes = bank.nearest(_unit(0, 1, 0), k=4, min_similarity=0.5)
    assert votes.task is None and votes.share == 0.0 and votes.neighbours == ()


def test_an_empty_bank_has_no_opinion() -> None:
    votes = ExampleBank(3).nearest(_unit(1, 0, 0), k=8)
    assert votes.task is None and votes.hard == 0.0


def test_k_larger_than_the_bank_uses_every_example(bank: ExampleBank) -> None:
    assert len(bank.nearest(_unit(1, 0, 0), k=50).neighbours) == 4


def test_embeddings_are_normalised_on_the_way_in() -> None:
    b = ExampleBank(2)
    b.add(np.array([10.0, 0.0]), "rag", False)
    assert b.nearest(np.array([3.0, 0.0]), k=1).similarity == pytest.approx(1.0)


def test_bad_rows_are_refused() -> None:
    b = ExampleBank(3)
    with pytest.raises(ValueError, match="shape"):
        b.add(np.ones(4), "chat", False)
    with pytest.raises(ValueError, match="unknown task"):
        b.add(np.ones(3), "poetry", False)  # type: ignore[arg-type]
    assert len(b) == 0


def test_save_and_load_round_trip(bank: ExampleBank, tmp_path: Path) -> None:
    path = tmp_path / "bank.npz"
    bank.save(path)
    loaded = ExampleBank.load(path)
    assert len(loaded) == len(bank) and loaded.dim == 3
    q = _unit(0.85, 0.15, 0.1)
    before, after = bank.nearest(q, k=3), loaded.nearest(q, k=3)
    assert [(n.row, n.task, n.hard) for n in after.neighbours] == [(n.row, n.task, n.hard) for n in before.neighbours]
    assert after.shares == pytest.approx(before.shares, abs=1e-3)  # stored as float16


def test_a_loaded_bank_takes_more_examples(bank: ExampleBank, tmp_path: Path) -> None:
    bank.save(tmp_path / "b.npz")
    loaded = ExampleBank.load(tmp_path / "b.npz")
    row = loaded.add(_unit(0, 1, 0), "agent", True)
    assert row == 4 and loaded.nearest(_unit(0, 1, 0), k=1).task == "agent"
