"""Session fixtures shared by all tests: the prepared cache (built once, idempotently)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.sources import default_cache_dir


@pytest.fixture(scope="session")
def prepared_classifier() -> Path:
    """The task classifier's artifacts in the default cache (``make test`` prepared them already)."""
    from inference.train_classifier import prepare_classifier

    cache = default_cache_dir()
    prepare_classifier(cache)
    return cache


@pytest.fixture(scope="session")
def prepared_models(prepared_classifier: Path) -> Path:
    """Every model of the default catalogue prepared (no-op after `make test`'s setup)."""
    from inference.catalogue import load_catalogue
    from inference.prepare import prepare_all

    prepare_all(load_catalogue(), prepared_classifier, show_progress=False)
    return prepared_classifier
