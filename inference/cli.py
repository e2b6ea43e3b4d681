"""Command-line front end of the inference core: route, ask, models prepare/list.

Contract (other tools depend on it):
- ``route "TEXT"`` prints one JSON object; ``route`` with no text reads JSON Lines on stdin
  (``{"text": str, "attachments": [{"filename": str, "content_type": str}]}``) and writes one JSON
  line per input, in order, flushed per line. A malformed line gets ``{"error": "..."}``, and so does a
  line over :data:`MAX_LINE_BYTES` (read in bounded pieces and skipped) or one that is not UTF-8; the
  reader goes on with the next line. A reader that goes away (``| head -1``) ends the command quietly.
- ``ask "TEXT"`` streams the answer to stdout and the route to stderr (``--task`` forces the task, whose
  pipeline frames the request). ``--file PATH`` (repeatable) attaches a file as a Discord user would (same checks,
  same prompt); a file that is missing, unreadable or refused is one ``error:`` line and exit 2.
  The route's JSON line on stderr carries ``tokens`` (generated) and
  ``tokens_per_s``; ``classify`` and ``json`` print the same line.
- ``classify TEXT --labels a,b,c [--multi]`` prints exactly ``{"labels": [...], "scores": {...}}``.
- ``json PROMPT --schema FILE`` prints only the JSON document; exit 1 with an error on stderr when no valid
  document could be produced, exit 2 for a schema that can't be read or used.
- ``docs add PATH... | list | remove NAME | ask QUESTION --server ID`` work on the bot's database;
  ``docs ask`` prints the answer on stdout and on stderr one JSON line with the route's keys,
  ``nothing_found`` and ``citations`` (``[{"source", "position", "quote"}]``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.catalogue import Catalogue, RoutingPolicy, load_catalogue, load_routing

if TYPE_CHECKING:
    from inference.serving.service import Switchboard
from inference.types import Attachment, Request, RouteDecision, TaskId

if TYPE_CHECKING:
    from inference.serving.service import Answer
    from inference.tools.base import ToolResult


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


def load_config(
    catalogue_path: Path | None, routing_path: Path | None, env: Mapping[str, str] | None = None
) -> tuple[Catalogue, RoutingPolicy]:
    catalogue = load_catalogue(catalogue_path, env)
    return catalogue, load_routing(routing_path, catalogue, env)


async def build_switchboard(
    catalogue: Catalogue, policy: RoutingPolicy, cache_dir: Path, env: Mapping[str, str] | None = None
) -> tuple[Switchboard, list[str]]:
    # Imported here so `--help` and config errors stay fast.
    from inference.classifier import TaskClassifier
    from inference.router import Router
    from inference.serving.service import Switchboard

    classifier = await asyncio.to_thread(
        TaskClassifier.load, cache_dir, long_context_tokens=policy.escalation.long_context_tokens
    )
    board = Switchboard(Router(classifier, policy, catalogue), cache_dir=cache_dir, env=env)
    notes = await board.start(probe=True)
    return board, notes


def _error_line(exc: Exception) -> dict[str, object]:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors()]
        return {"error": "invalid input: " + "; ".join(parts)}
    if isinstance(exc, json.JSONDecodeError):
        return {"error": f"not valid JSON: {exc.msg} at column {exc.colno}"}
    return {"error": str(exc)}


#: Longest JSON line ``route`` accepts on stdin; a longer one is skipped with an error line, never held.
MAX_LINE_BYTES = 1 << 20


async def route_command(
    text: str | None,
    *,
    catalogue: Catalogue,
    policy: RoutingPolicy,
    cache_dir: Path,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
    env: Mapping[str, str] | None = None,
) -> int:
    board, _notes = await build_switchboard(catalogue, policy, cache_dir, env)
    try:
        if text is not None:
            print(json.dumps(board.route(Request(text=text)).as_json()), file=stdout, flush=True)
            return 0
        # Bytes, so that a line that is not UTF-8 is one error line rather than the end of the command.
        source: IO[bytes] | IO[str] = getattr(stdin, "buffer", stdin)
        for line in _lines(source, MAX_LINE_BYTES):
            try:
                if isinstance(line, ValueError):
                    raise line
                item = RouteIn.model_validate_json(line) if line.lstrip().startswith("{") else None
                if item is None:
                    raise ValueError('each line must be a JSON object with a "text" field')
                out: dict[str, object] = board.route(item.to_request()).as_json()
            except (ValidationError, ValueError) as exc:
                out = _error_line(exc)
            stdout.write(json.dumps(out) + "\n")
            stdout.flush()
        return 0
    except BrokenPipeError:
        # The reader went away (`| head -1`): not an error. Point stdout at /dev/null so that the
        # interpreter's last flush at exit has nowhere to fail either.
        if stdout is sys.stdout:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 0
    finally:
        await board.aclose()


def _lines(stream: IO[bytes] | IO[str], limit: int) -> Iterator[str | ValueError]:
    """Non-blank lines, read in pieces of at most ``limit`` bytes. A line over the limit (skipped to its
    end, a piece at a time) or one that is not UTF-8 comes as a ValueError to report; reading goes on."""
    # readline, not iteration: iteration buffers ahead, which would delay answers on a pipe.
    while chunk := stream.readline(limit + 1):
        raw = chunk.encode() if isinstance(chunk, str) else chunk
        if len(raw) > limit and not raw.endswith(b"\n"):
            while (rest := stream.readline(limit)) and rest[-1:] not in ("\n", b"\n"):
                pass
            yield ValueError(f"line too long (over {limit} bytes); skipped")
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield ValueError(f"line is not valid UTF-8 (byte {exc.start}); skipped")
            continue
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
    env: Mapping[str, str] | None = None,
    files: Sequence[Path] = (),
    max_file_bytes: int = 8 * 1024 * 1024,
) -> int:
    from inference.attachments import AttachmentRefused, local_file, read_files, with_images
    from inference.errors import InferenceError
    from inference.tasks.base import pipeline_for
    from inference.tasks.multimodal import plan_media

    # --file: the checks and the reading a Discord attachment gets, before any model loads.
    try:
        attached = tuple(local_file(path) for path in files)
        read = await read_files(attached, max_bytes=max_file_bytes)
    except AttachmentRefused as exc:
        print(f"error: {exc}", file=stderr)
        return 2
    board, notes = await build_switchboard(catalogue, policy, cache_dir, env)
    for note in notes:
        print(f"note: {note}", file=stderr)
    try:
        request = Request(text=text, attachments=attached, context_tokens=read.tokens)
        routed = board.route(request, task=task)
        media = plan_media(
            routed,
            request,
            read,
            catalogue=catalogue,
            reroute=lambda r, t: board.route(r, task=t),
            resolve=board.resolve,
        )
        for note in (*read.notes, *media.notes):
            print(f"note: {note}", file=stderr)
        decision, text = media.decision, read.prompt(text)
        if decision.task == "tool_use":  # the tools that need no Discord; each call is shown on stderr
            return await _ask_with_tools(board, decision, text, max_new_tokens, stdout=stdout, stderr=stderr, env=env)
        pipeline = pipeline_for(decision.task)
        prepared = pipeline.prepare(text, max_new_tokens=max_new_tokens)
        if media.notice is not None:
            prepared = replace(prepared, notice=media.notice)
        answer = board.answer(
            decision,
            with_images(prepared.messages, media.images),
            params=prepared.params,
            allow_fallback=not media.images,  # the other tier can't see the images
        )
        if prepared.notice is not None:  # the task can't be served yet: it says so, and no model runs
            print(prepared.notice, file=stdout)
            print_route(decision, answer, 0.0, stderr)
            return 0
        await board.backend(decision.model)  # load first, so the timings are the answer's, not the load's
        started = time.perf_counter()
        parts: list[str] = []
        try:
            async for piece in answer:
                parts.append(piece)
                if pipeline.streams:
                    stdout.write(piece)
                    stdout.flush()
        except InferenceError as exc:
            print(f"\nerror: {answer.model} failed: {exc} (request {answer.request_id})", file=stderr)
            return 1
        if not pipeline.streams:  # shown once post-processed (a code block fenced, a bare label)
            stdout.write(pipeline.finish("".join(parts), prompt=text).text)
        stdout.write("\n")
        print_route(decision, answer, time.perf_counter() - started, stderr)
        return 0
    finally:
        await board.aclose()


async def _ask_with_tools(
    board: Switchboard,
    decision: RouteDecision,
    text: str,
    max_new_tokens: int,
    *,
    stdout: TextIO,
    stderr: TextIO,
    env: Mapping[str, str] | None,
) -> int:
    """``ask`` for tool_use: each tool call as one JSON line on stderr as it completes, the answer on stdout,
    then the route with a ``tools`` list (tool, arguments, ok)."""
    from inference.errors import ConfigError, InferenceError
    from inference.tools import default_toolbox
    from inference.tools.loop import run_with_tools

    try:
        toolbox = default_toolbox(env=env)
    except ConfigError as exc:
        print(f"error: {exc}", file=stderr)
        return 2

    def show(result: ToolResult) -> None:
        print(json.dumps(result.as_json(), ensure_ascii=False), file=stderr, flush=True)

    await board.backend(decision.model)  # load first, so the timings are the answer's, not the load's
    started = time.perf_counter()
    try:
        run = await run_with_tools(board, decision, text, toolbox, max_new_tokens=max_new_tokens, on_result=show)
    except InferenceError as exc:
        print(f"error: {exc.user_text} ({exc})", file=stderr)
        return 1
    print(run.text, file=stdout)
    calls = [{"tool": r.call.name, "arguments": r.call.arguments, "ok": r.ok} for r in run.results]
    if run.answer is not None:  # the loop's own notes (a tier that failed, rounds spent) join the answer's
        run.answer.notes = list(run.notes)
    print_route(decision, run.answer, time.perf_counter() - started, stderr, tools=calls)
    return 0


def print_route(
    decision: RouteDecision,
    answer: Answer | None,
    total_s: float,
    stderr: TextIO,
    *,
    tools: list[dict[str, object]] | None = None,
) -> None:
    """The route on stderr: one line for people, then one JSON line (with generated tokens and tokens/s, and
    with ``tools`` the tool calls that ran)."""
    t = answer.timings if answer is not None else None
    first = t.first_token_s if t is not None else None
    tokens = t.tokens if t is not None else 0
    rate = t.tokens_per_s if t is not None else None
    if rate is None:  # fewer than two tokens: the plain average (0 when nothing was generated)
        rate = tokens / total_s if tokens and total_s > 0 else 0.0
    tier = answer.tier.value if answer is not None else decision.tier.value
    model = answer.model if answer is not None else decision.model
    provider = answer.provider if answer is not None else ""
    answer_notes = list(answer.notes) if answer is not None else []
    route: dict[str, object] = {
        "task": decision.task,
        "tier": tier,
        "model": model,
        "provider": provider,
        "time_to_first_token_s": round(first, 3) if first is not None else None,
        "total_s": round(total_s, 3),
        "tokens": tokens,
        "tokens_per_s": round(rate, 2),
        "reason": decision.reason,
        "notes": answer_notes,
    }
    if tools is not None:
        route["tools"] = tools
    ttft = f"{first:.2f}s" if first is not None else "-"
    print(
        f"route: {decision.task} -> {tier} / {model} via {provider or '-'}; first token {ttft}, "
        f"total {total_s:.2f}s, {tokens} tokens, {rate:.1f} tokens/s",
        file=stderr,
    )
    for note in answer_notes:
        print(f"note: {note}", file=stderr)
    print(json.dumps(route), file=stderr)


async def classify_command(
    text: str,
    labels: list[str],
    *,
    catalogue: Catalogue,
    policy: RoutingPolicy,
    cache_dir: Path,
    multi: bool = False,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
    env: Mapping[str, str] | None = None,
) -> int:
    """Print ``{"labels": [...], "scores": {...}}``: only labels from ``labels``, with a score for each."""
    from inference.errors import InferenceError
    from inference.structured import SchemaError
    from inference.structured import classify as classify_labels

    board, notes = await build_switchboard(catalogue, policy, cache_dir, env)
    for note in notes:
        print(f"note: {note}", file=stderr)
    try:
        decision = board.route(Request(text=text), task="classification")
        await board.backend(decision.model)
        started = time.perf_counter()
        try:
            result = await classify_labels(board, decision, text, labels, multi=multi)
        except SchemaError as exc:
            print(f"error: {exc}", file=stderr)
            return 2
        except InferenceError as exc:
            print(f"error: {exc.user_text} ({exc})", file=stderr)
            return 1
        print(json.dumps({"labels": result.labels, "scores": result.scores}), file=stdout)
        print_route(decision, result.answer, time.perf_counter() - started, stderr)
        return 0
    finally:
        await board.aclose()


def read_schema(path: Path) -> dict[str, object]:
    """The JSON Schema in ``path``, checked against the supported subset (ValueError names the problem)."""
    from inference.structured import SchemaError, check_schema

    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"can't read the schema file {path}: {exc}") from None
    try:
        schema = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the schema file {path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    try:
        return check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"the schema in {path} can't be used: {exc}") from None


async def json_command(
    prompt: str,
    schema_path: Path,
    *,
    catalogue: Catalogue,
    policy: RoutingPolicy,
    cache_dir: Path,
    max_new_tokens: int = 512,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
    env: Mapping[str, str] | None = None,
) -> int:
    """Print only a JSON document valid against the schema; exit 1 when none could be produced."""
    from dataclasses import replace

    from inference.errors import InferenceError
    from inference.structured import generate, json_constraint
    from inference.tasks.base import pipeline_for

    try:
        schema = read_schema(schema_path)
    except ValueError as exc:
        print(f"error: {exc}", file=stderr)
        return 2
    board, notes = await build_switchboard(catalogue, policy, cache_dir, env)
    for note in notes:
        print(f"note: {note}", file=stderr)
    try:
        decision = board.route(Request(text=prompt), task="grammar")
        # The model is told the shape (field names matter to it); decoding and validation hold it to it.
        request = f"{prompt}\n\nReply with only a JSON document valid against this JSON Schema:\n{json.dumps(schema)}"
        prepared = pipeline_for("grammar").prepare(request, max_new_tokens=max_new_tokens)
        await board.backend(decision.model)
        started = time.perf_counter()
        try:
            result = await generate(
                board,
                decision,
                prepared.messages,
                json_constraint(schema),
                params=replace(prepared.params, constraint=None),
            )
        except InferenceError as exc:
            print(f"error: no valid JSON document: {exc.user_text} ({exc})", file=stderr)
            return 1
        print(json.dumps(result.value, ensure_ascii=False), file=stdout)
        print_route(decision, result.answer, time.perf_counter() - started, stderr)
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


# --- docs: the server's knowledge base (the same database as the bot) ---------------------------------------


async def docs_add_command(
    paths: list[Path], *, server_id: int, database_url: str, cache_dir: Path, stdout: TextIO = sys.stdout
) -> int:
    """Index each file (replacing one of the same name); one line per file. Exit 1 when any was refused."""
    from inference.errors import BadRequest
    from inference.knowledge.service import KnowledgeBase

    kb = await KnowledgeBase.open(database_url, cache_dir)
    failed = 0
    try:
        for path in paths:
            try:
                data = path.read_bytes()
                source = await kb.add_file(server_id, path.name, data)
            except OSError as exc:
                print(f"error: can't read {path}: {exc.strerror or exc}", file=sys.stderr)
                failed += 1
                continue
            except BadRequest as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(f"added {source.name}: {source.chunks} chunks", file=stdout)
    finally:
        await kb.close()
    return 1 if failed else 0


async def docs_list_command(
    *, server_id: int, database_url: str, stdout: TextIO = sys.stdout, json_output: bool = False
) -> int:
    from inference.knowledge.service import open_index

    index = await open_index(database_url)
    try:
        sources = await index.sources(server_id)
    finally:
        await index.close()
    if json_output:
        rows = [{"name": s.name, "kind": s.kind, "channel_id": s.channel_id, "chunks": s.chunks} for s in sources]
        print(json.dumps(rows), file=stdout)
        return 0
    if not sources:
        print(f"no documents indexed for server {server_id}", file=sys.stderr)
    for s in sources:
        where = f"  channel {s.channel_id}" if s.channel_id is not None else ""
        print(f"{s.name}\t{s.kind}\t{s.chunks} chunks{where}", file=stdout)
    return 0


async def docs_remove_command(name: str, *, server_id: int, database_url: str, stdout: TextIO = sys.stdout) -> int:
    from inference.knowledge.service import open_index

    index = await open_index(database_url)
    try:
        removed = await index.remove(server_id, name)
    finally:
        await index.close()
    if not removed:
        print(f"error: no document named {name!r} on server {server_id}", file=sys.stderr)
        return 1
    print(f"removed {name}", file=stdout)
    return 0


async def docs_ask_command(
    question: str,
    *,
    server_id: int,
    database_url: str,
    catalogue: Catalogue,
    policy: RoutingPolicy,
    cache_dir: Path,
    env: Mapping[str, str] | None = None,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
) -> int:
    """The answer on stdout; on stderr one JSON line: the route's keys plus ``citations`` and ``nothing_found``.

    The command line reads every source (files and channels alike): it has no Discord user to check.
    """
    from dataclasses import asdict

    from inference.errors import InferenceError
    from inference.knowledge.service import KnowledgeBase

    kb = await KnowledgeBase.open(database_url, cache_dir)
    try:
        board, notes = await build_switchboard(catalogue, policy, cache_dir, env)
        for note in notes:
            print(f"note: {note}", file=stderr)
        started = time.perf_counter()
        try:
            result = await kb.answer(server_id, question, can_read=lambda _channel: True, board=board)
        except InferenceError as exc:
            print(f"error: {exc.user_text} ({exc})", file=stderr)
            return 1
        finally:
            await board.aclose()
        print(result.text, file=stdout)
        if result.citations:
            print("\nSources:", file=stdout)
            for n, c in enumerate(result.citations, start=1):
                print(f'[{n}] {c.source}, {c.position}: "{c.quote}"', file=stdout)
        line = dict(result.route)
        line["total_s"] = round(time.perf_counter() - started, 3)
        line["nothing_found"] = result.nothing_found
        line["citations"] = [asdict(c) for c in result.citations]
        print(json.dumps(line, ensure_ascii=False), file=stderr)
        return 0
    finally:
        await kb.close()
