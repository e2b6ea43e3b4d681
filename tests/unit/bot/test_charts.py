"""The /stats chart (bot/charts.py): valid PNGs for any data, no pyplot global state."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import matplotlib.image
import pytest

from bot.charts import render_stats_chart

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

BY_TASK_TIER = {
    ("chat", "small"): 142,
    ("chat", "large"): 23,
    ("code", "small"): 31,
    ("code", "large"): 57,
    ("summarization", "small"): 40,
    ("reasoning", "large"): 18,
}
LATENCY = {"smollm2-onnx": 640.0, "qwen2.5-7b-instruct": 2350.0}


def decode(png: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, read back by matplotlib's own decoder."""
    assert png.startswith(PNG_SIGNATURE)
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    height, width = pixels.shape[:2]
    return width, height


@pytest.mark.parametrize(
    ("by_task_tier", "latency"),
    [
        (BY_TASK_TIER, LATENCY),
        ({}, {}),
        ({("chat", "small"): 0}, {}),  # zero counts are "nothing yet" too
        (BY_TASK_TIER, {}),
        ({}, LATENCY),
        ({("chat", "small"): 1, ("chat", "other-tier"): 2}, {"m": 0.0}),
        ({(f"task-{i}-long-name", "small"): i + 1 for i in range(15)}, {f"model-{i}": 10.0**i for i in range(12)}),
    ],
    ids=["typical", "empty", "zeros", "no-latency", "no-requests", "odd-tier", "many"],
)
def test_renders_a_readable_png(by_task_tier: dict[tuple[str, str], int], latency: dict[str, float]) -> None:
    width, height = decode(render_stats_chart(by_task_tier, latency, "Switchboard · test"))
    assert width >= 800 and height >= 400


def test_pillow_reads_it_too() -> None:
    image_mod = pytest.importorskip("PIL.Image")
    with image_mod.open(io.BytesIO(render_stats_chart(BY_TASK_TIER, LATENCY, "t"))) as image:
        assert image.format == "PNG"
        image.verify()


def test_does_not_touch_pyplot() -> None:
    # In a fresh interpreter, since other tests may import pyplot themselves.
    code = (
        "import sys; from bot.charts import render_stats_chart; "
        "render_stats_chart({('chat', 'small'): 1}, {'m': 1.0}, 't'); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


async def test_renders_concurrently_off_the_event_loop() -> None:
    pngs = await asyncio.gather(
        asyncio.to_thread(render_stats_chart, BY_TASK_TIER, LATENCY, "one"),
        asyncio.to_thread(render_stats_chart, {}, {}, "two"),
        asyncio.to_thread(render_stats_chart, BY_TASK_TIER, {}, "three"),
    )
    assert all(decode(png) for png in pngs)
