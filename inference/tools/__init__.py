"""Tools a model may call: one base (:mod:`inference.tools.base`), one file per family.

Built in (no Discord needed): ``calculator``, ``current_time``, ``convert_time``, ``date_add``, ``days_between``,
``convert_units``, ``roll_dice``; the operator's HTTP tools come from ``config/tools.yaml``
(:mod:`inference.tools.http`). The bot registers its Discord-bound tools on the same :class:`ToolBox`. The loop
that lets a model use them is :func:`inference.tools.loop.run_with_tools`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from inference.tools.base import Tool, ToolBox, ToolCall, ToolError, ToolResult

if TYPE_CHECKING:
    from inference.serving.netguard import Guard
    from inference.tools.dates import Now

__all__ = ["Tool", "ToolBox", "ToolCall", "ToolError", "ToolResult", "builtin_tools", "default_toolbox"]


def builtin_tools(*, now: Now | None = None, rng: random.Random | None = None) -> list[Tool]:
    """The tools that need nothing but this process (``now`` and ``rng`` injectable for tests)."""
    from inference.tools.calculator import Calculator
    from inference.tools.dates import ConvertTime, CurrentTime, DateAdd, DaysBetween
    from inference.tools.dice import RollDice
    from inference.tools.units import ConvertUnits

    return [
        Calculator(),
        CurrentTime(now),
        ConvertTime(now),
        DateAdd(now),
        DaysBetween(now),
        ConvertUnits(),
        RollDice(rng),
    ]


def default_toolbox(
    *, env: Mapping[str, str] | None = None, guard: Guard | None = None, config_path: Path | None = None
) -> ToolBox:
    """The built-in tools and the operator's HTTP tools (``config/tools.yaml``), behind ``guard``."""
    from inference.errors import ConfigError
    from inference.tools.http import DEFAULT_PATH, http_tools, load_tools_config

    try:
        return ToolBox([*builtin_tools(), *http_tools(load_tools_config(config_path, env), guard)])
    except ValueError as exc:  # an operator's tool that takes a built-in's name
        raise ConfigError(f"{config_path or DEFAULT_PATH}: {exc}") from None
