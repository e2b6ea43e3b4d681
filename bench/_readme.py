"""Benchmarks write their own tables into README.md, so its numbers are measured, never typed by hand.

A table lives between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``; a script run with ``--readme``
replaces what is between the markers with its table, the command that made it and the date.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, table: str) -> None:
    """Replace the README's ``bench:NAME`` section with ``table``, stamped with the command and the date."""
    command = "python " + " ".join([Path(sys.argv[0]).as_posix().split("/main/")[-1], *sys.argv[1:]])
    command = command.replace(" --readme", "")
    body = f"`{command}` ({machine()}, {dt.date.today().isoformat()}):\n\n{table.strip()}\n"
    text = README.read_text(encoding="utf-8")
    pattern = re.compile(rf"(<!-- bench:{re.escape(name)} -->\n).*?(<!-- /bench:{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- bench:{name} --> ... <!-- /bench:{name} --> section")
    README.write_text(pattern.sub(lambda m: m.group(1) + body + m.group(2), text), encoding="utf-8")
    print(f"wrote the {name} table into {README}", file=sys.stderr)
