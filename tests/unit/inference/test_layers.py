"""The architecture, checked: the serving path never imports set-up code, and inference/ knows no Discord."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
#: Set-up time only: exporting, preparing, training (and evaluating, which prepares).
BUILD = ("inference.build", "inference.classifier.train", "inference.classifier.evaluate")
#: Entry points that offer both phases (``models prepare`` and serving) and set-up modules themselves.
BOTH_PHASES = {"bot/__main__.py"}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function (lazy imports count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _runtime_files() -> list[Path]:
    files = [*ROOT.glob("bot/**/*.py"), *ROOT.glob("cogs/**/*.py"), *ROOT.glob("inference/**/*.py")]
    build_dirs = ("inference/build/", "inference/classifier/train.py", "inference/classifier/evaluate.py")
    return sorted(
        f
        for f in files
        if not str(f.relative_to(ROOT)).startswith(build_dirs) and str(f.relative_to(ROOT)) not in BOTH_PHASES
    )


@pytest.mark.parametrize("path", _runtime_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_run_time_code_never_imports_build_time_code(path: Path) -> None:
    bad = sorted(m for m in _imports(path) if m.startswith(BUILD))
    assert not bad, f"{path.relative_to(ROOT)} imports set-up code {bad}: move what both need to inference/artifacts.py"


@pytest.mark.parametrize("path", sorted(ROOT.glob("inference/**/*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_inference_knows_nothing_of_discord_or_the_bot(path: Path) -> None:
    bad = sorted(m for m in _imports(path) if m.split(".")[0] in {"discord", "bot", "cogs"})
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: inference/ must stay usable without Discord"
