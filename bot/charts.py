"""The /stats chart: requests per task split by tier, and median latency per model, as one PNG.

Rendering takes tens of milliseconds of CPU, so callers run it off the event loop::

    png = await asyncio.to_thread(render_stats_chart, by_task_tier, median_latency_ms, title)
    await interaction.followup.send(file=discord.File(io.BytesIO(png), "stats.png"))

Only the object-oriented matplotlib API is used (a fresh ``Figure`` with an Agg canvas per call, never
``pyplot``), so there is no global figure state and concurrent renders from threads do not interfere.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["render_stats_chart"]

# Discord's dark theme, so the image sits naturally in the client; the contrast also holds in light mode.
_BG = "#2b2d31"
_PANEL = "#313338"
_TEXT = "#dbdee1"
_MUTED = "#949ba4"
_GRID = "#4e5058"
_TIER_COLOURS = {"small": "#57f287", "large": "#5865f2"}
_OTHER_COLOURS = ("#eb459e", "#ed4245", "#3ba55c", "#9b84ee")  # none is the latency yellow
_LATENCY = "#fee75c"
_DPI = 100


def _style(ax: Axes, title: str) -> None:
    ax.set_facecolor(_PANEL)
    ax.set_title(title, color=_TEXT, fontsize=12, loc="left", pad=10)
    ax.tick_params(colors=_MUTED, labelsize=9)
    for side, spine in ax.spines.items():
        spine.set_visible(side in ("left", "bottom"))
        spine.set_color(_GRID)


def _empty(ax: Axes, message: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, message, ha="center", va="center", color=_MUTED, fontsize=12, transform=ax.transAxes)


def _tier_order(tiers: set[str]) -> list[str]:
    known = [t for t in _TIER_COLOURS if t in tiers]
    return known + sorted(tiers - set(_TIER_COLOURS))


def _requests_panel(ax: Axes, by_task_tier: Mapping[tuple[str, str], int]) -> None:
    _style(ax, "Requests by task")
    counts = {k: v for k, v in by_task_tier.items() if v > 0}
    if not counts:
        _empty(ax, "no requests yet")
        return
    totals: dict[str, int] = {}
    for (task, _), n in counts.items():
        totals[task] = totals.get(task, 0) + n
    tasks = sorted(totals, key=lambda t: (-totals[t], t))  # busiest first
    tiers = _tier_order({tier for _, tier in counts})
    others = iter(_OTHER_COLOURS * (len(tiers) // len(_OTHER_COLOURS) + 1))
    bottom = [0] * len(tasks)
    bars = None
    for tier in tiers:
        heights = [counts.get((task, tier), 0) for task in tasks]
        colour = _TIER_COLOURS.get(tier) or next(others)
        bars = ax.bar(tasks, heights, bottom=bottom, label=f"{tier} tier", color=colour, width=0.6, zorder=3)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    if bars is not None:  # totals above the stacks
        ax.bar_label(bars, labels=[str(t) for t in bottom], padding=3, color=_TEXT, fontsize=9)
    ax.set_ylabel("requests", color=_MUTED, fontsize=9)
    ax.set_ylim(0, max(bottom) * 1.15)
    if len(tasks) < 4:  # keep one or two bars from filling the whole panel
        pad = (4 - len(tasks)) / 2
        ax.set_xlim(-0.5 - pad, len(tasks) - 0.5 + pad)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # no half requests
    ax.grid(axis="y", color=_GRID, linewidth=0.6, alpha=0.6, zorder=0)
    if len(tasks) > 4 or max(map(len, tasks)) > 10:
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
    # Beside the panel title rather than over the bars, so it can never hide one.
    legend = ax.legend(frameon=False, fontsize=9, ncols=len(tiers), loc="lower right", bbox_to_anchor=(1, 1))
    for text in legend.get_texts():
        text.set_color(_TEXT)


def _format_ms(ms: float) -> str:
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:.0f} ms"


def _latency_panel(ax: Axes, median_latency_ms: Mapping[str, float]) -> None:
    _style(ax, "Median latency by model")
    latencies = {m: v for m, v in median_latency_ms.items() if v >= 0}
    if not latencies:
        _empty(ax, "no timings yet")
        return
    models = sorted(latencies, key=lambda m: (latencies[m], m))  # fastest at the bottom
    values = [latencies[m] for m in models]
    seconds = max(values) >= 2000  # an axis in the unit the labels mostly use
    scaled = [v / 1000 for v in values] if seconds else values
    bars = ax.barh(models, scaled, color=_LATENCY, height=0.5, zorder=3)
    ax.bar_label(bars, labels=[_format_ms(v) for v in values], padding=4, color=_TEXT, fontsize=9)
    ax.set_xlim(0, max(max(scaled), 1.0) * 1.25)  # room for the labels
    if len(models) < 3:  # keep one or two bars from filling the whole panel
        pad = (3 - len(models)) / 2
        ax.set_ylim(-0.5 - pad, len(models) - 0.5 + pad)
    ax.set_xlabel("seconds" if seconds else "milliseconds", color=_MUTED, fontsize=9)
    ax.grid(axis="x", color=_GRID, linewidth=0.6, alpha=0.6, zorder=0)


def render_stats_chart(
    by_task_tier: Mapping[tuple[str, str], int],
    median_latency_ms: Mapping[str, float],
    title: str,
) -> bytes:
    """A PNG with stacked request counts per (task, tier) and median latency per model.

    Blocking CPU work: call it through ``asyncio.to_thread``. Empty inputs give a readable
    "no requests yet" image rather than an error.
    """
    models = len(median_latency_ms)
    height = max(4.5, 1.6 + 0.38 * models)  # keep latency bars readable with many models
    fig = Figure(figsize=(11, height), dpi=_DPI, facecolor=_BG, layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to the figure; no pyplot involved
    fig.suptitle(title, color=_TEXT, fontsize=14, fontweight="bold")
    if not any(v > 0 for v in by_task_tier.values()) and not median_latency_ms:
        _style(ax := fig.add_subplot(), "")
        ax.spines["left"].set_visible(False)
        ax.spines["bottom"].set_visible(False)
        _empty(ax, "No requests yet")
    else:
        left, right = fig.subplots(1, 2, width_ratios=(3, 2))
        _requests_panel(left, by_task_tier)
        _latency_panel(right, median_latency_ms)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor=_BG)
    return buf.getvalue()
