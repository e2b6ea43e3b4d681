"""Temperature scaling and expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from inference.classifier.calibration import expected_calibration_error, fit_temperature, nll, softmax


def _overconfident(n: int = 4000, classes: int = 5, true_t: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from softmax(z), logits reported as z * true_t: over-confident by a factor true_t."""
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 1.5, size=(n, classes))
    p = softmax(z)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return z * true_t, labels


def test_the_fitted_temperature_lowers_nll_and_recovers_the_true_one() -> None:
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(logits, labels, t) < nll(logits, labels) - 0.1


def test_temperature_never_changes_the_winner() -> None:
    logits, _ = _overconfident(n=200)
    assert (softmax(logits, 0.3).argmax(axis=1) == softmax(logits, 7.0).argmax(axis=1)).all()


def test_calibrated_logits_keep_a_temperature_near_one() -> None:
    logits, labels = _overconfident(true_t=1.0)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.1)


def test_ece_on_a_known_case() -> None:
    # Bin (0.8, 0.867]: confidence 0.85 twice, one right -> gap 0.35. Bin (0.267, 0.333]: 0.3 twice, both right
    # -> gap 0.7. Equal weights: ECE = (0.35 + 0.7) / 2.
    assert expected_calibration_error([0.85, 0.85, 0.3, 0.3], [True, False, True, True], bins=15) == pytest.approx(
        0.525
    )


def test_ece_is_zero_when_confidence_matches_accuracy() -> None:
    conf = [0.75] * 4 + [1.0] * 3
    hits = [True, True, True, False, True, True, True]
    assert expected_calibration_error(conf, hits, bins=10) == pytest.approx(0.0)


def test_ece_of_nothing_is_zero() -> None:
    assert expected_calibration_error([], []) == 0.0
