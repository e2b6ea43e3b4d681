"""Command-line front end of the inference core: route, ask, models prepare/list.

Contract (other tools depend on it):
- ``route "TEXT"`` prints one JSON object; ``route`` with no text reads JSON Lines on stdin
  (``{"text": str, "attachments": [{"filename": str, "content_type": str}]}``) and writes one JSON
  line per input, in order, flushed per line. A malformed line gets ``{"error": "..."}``.
- ``ask "TEXT"`` streams the answer to stdout and the route to stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.catalogue import Catalogue, RoutingPolicy, load_catalogue, load_routing

if TYPE_CHECKING:
    from inference.service import Switchboard
from inference.types import Attachment, ChatMessage, GenerationParams, Request, TaskId


class AttachmentIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    filename: str
    content_type: str = ""


class RouteIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    text: str
    attachments: list[AttachmentIn] = Field(default_factory=list)

    def to_request(self) -> Request:
        return Request(
            text=self.text,
            attachments=tuple(Attachment(a.filename, a.content_type) for a in self.attachments),
        )


def load_config(catalogue_path: Path | None, routing_path: Path | None) -> tuple[Catalogue, RoutingPolicy]:
    catalogue = load_catalogue(catalogue_path)
    return catalogue, load_routing(routing_path, catalogue)


async def build_switchboard(
    catalogue: Catalogue, policy: RoutingPolicy, cache_dir: Path
) -> tuple[Switchboard, list[str]]:
    # Imported here so `--help` and config errors stay fast.
    from inference.classifier import TaskClassifier
    from inference.router import Router
    from inference.service import Switchboard

    classifier = await asyncio.to_thread(TaskClassifier.load, cache_dir)
    board = Switchboard(Router(classifier, policy, catalogue), cache_dir=cache_dir)
    notes = await board.start(probe=True)
    return board, notes


def _error_line(exc: Exception) -> dict[str, object]:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors()]
        return {"error": "invalid input: " + "; ".join(parts)}
    if isinstance(exc, json.JSONDecodeError):
        return {"error": f"not valid JSON: {exc.msg} at column {exc.colno}"}
    return {"error": str(exc)}


async def route_command(
    text: str | None,
    *,
    catalogue: Catalogue,
    policy: RoutingPolicy,
    cache_dir: Path,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
) -> int:
    board, _notes = await build_switchboard(catalogue, policy, cache_dir)
    try:
        if text is not None:
            print(json.dumps(board.route(Request(text=text)).as_json()), file=stdout, flush=True)
            return 0
        for line in _lines(stdin):
            try:
                item = RouteIn.model_validate_json(line) if line.lstrip().startswith("{") else None
                if item is None:
                    raise ValueError('each line must be a JSON object with a "text" field')
                out: dict[str, object] = board.route(item.to_request()).as_json()
            except (ValidationError, ValueError) as exc:
                out = _error_line(exc)
            stdout.write(json.dumps(out) + "\n")
            stdout.flush()
        return 0
    finally:
        await board.aclose()


def _lines(stdin: TextIO) -> Iterable[str]:
    # readline, not iteration: iteration buffers ahead, which would delay answers on a pipe.
    while line := stdin.readline():
        if line.strip():
            yield line


async def ask_command(
    text: str,
    *,
    catalogue: Catalogue,
    policy: RoutingPolicy,
    cache_dir: Path,
    task: TaskId | None = None,
    max_new_tokens: int = 256,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
) -> int:
    from inference.errors import InferenceError

    board, notes = await build_switchboard(catalogue, policy, cache_dir)
    for note in notes:
        print(f"note: {note}", file=stderr)
    try:
        decision = board.route(Request(text=text), task=task)
        answer = board.answer(
            decision,
            [ChatMessage("user", text)],
            params=GenerationParams(max_new_tokens=max_new_tokens),
        )
        await board.backend(decision.model)  # load first, so the timings are the answer's, not the load's
        started = time.perf_counter()
        try:
            async for piece in answer:
                stdout.write(piece)
                stdout.flush()
        except InferenceError as exc:
            print(f"\nerror: {answer.model} failed: {exc} (request {answer.request_id})", file=stderr)
            return 1
        stdout.write("\n")
        t = answer.timings
        ttft = f"{t.first_token_s:.2f}s" if t.first_token_s is not None else "-"
        route = {
            "task": decision.task,
            "tier": answer.tier.value,
            "model": answer.model,
            "provider": answer.provider,
            "time_to_first_token_s": round(t.first_token_s, 3) if t.first_token_s is not None else None,
            "total_s": round(time.perf_counter() - started, 3),
            "reason": decision.reason,
            "notes": answer.notes,
        }
        print(
            f"route: {decision.task} -> {answer.tier.value} / {answer.model} via {answer.provider}; "
            f"first token {ttft}, total {route['total_s']:.2f}s",
            file=stderr,
        )
        for note in answer.notes:
            print(f"note: {note}", file=stderr)
        print(json.dumps(route), file=stderr)
        return 0
    finally:
        await board.aclose()


def models_list(catalogue: Catalogue, policy: RoutingPolicy, stdout: TextIO = sys.stdout) -> int:
    routed = {name: tier.value for tier, name in policy.models.items()}
    for name, spec in catalogue.models.items():
        where = getattr(spec, "base_url", None) or getattr(spec, "source", "")
        mark = f"  <- {routed[name]} tier" if name in routed else ""
        print(f"{name:16} {spec.kind:12} {spec.tier.value:6} {where}{mark}", file=stdout)
    return 0
