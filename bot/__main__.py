"""Entry point: `python -m bot [run|route|ask|classify|json|models|docs|serve]`. The one place that reads settings."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict

from pydantic import ValidationError
from pydantic_settings import SettingsError

from inference.catalogue import Catalogue, RoutingPolicy
from inference.errors import ConfigError, InferenceError
from inference.types import TASKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description="Switchboard: a Discord bot that routes each request to the smallest model that can do it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="run the Discord bot (the default when no command is given)")
    route = sub.add_parser("route", help="print the route for TEXT, or for each JSON line on stdin")
    route.add_argument("text", nargs="?", help="request text; omit to read JSON Lines on stdin")
    ask = sub.add_parser("ask", help="answer TEXT through the router, streaming to stdout")
    ask.add_argument("text", help="the request")
    ask.add_argument("--task", choices=TASKS, help="force the task instead of classifying")
    ask.add_argument("--max-new-tokens", type=int, default=256)
    ask.add_argument(
        "--file",
        dest="files",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="attach a file as a Discord user would (text files, images); repeatable",
    )
    classify = sub.add_parser("classify", help='label TEXT with one of --labels; prints {"labels", "scores"}')
    classify.add_argument("text", help="the text to label")
    classify.add_argument("--labels", required=True, type=_labels, help="comma-separated labels, e.g. a,b,c")
    classify.add_argument("--multi", action="store_true", help="every label that applies, not just one")
    jsonp = sub.add_parser("json", help="answer PROMPT with only a JSON document valid against --schema")
    jsonp.add_argument("prompt", help="the request")
    jsonp.add_argument("--schema", required=True, type=Path, metavar="FILE", help="a JSON Schema file")
    jsonp.add_argument("--max-new-tokens", type=int, default=512)
    models = sub.add_parser("models", help="manage the model catalogue")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    msub.add_parser("prepare", help="build/export the catalogue's models into the cache")
    msub.add_parser("list", help="list the catalogue's models")
    serve = sub.add_parser("serve", help="serve the router over the OpenAI chat-completions protocol (HTTP)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (beyond loopback needs an API key)")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free port)")
    docs = sub.add_parser("docs", help="a server's knowledge base: add, list, remove documents; ask them")
    dsub = docs.add_subparsers(dest="docs_command", metavar="ACTION", required=True)
    dadd = dsub.add_parser("add", help="index files (.txt, .md, .html, .pdf), replacing ones of the same name")
    dadd.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    dlist = dsub.add_parser("list", help="list the server's indexed sources")
    dlist.add_argument("--json", action="store_true", help="one JSON array instead of lines")
    dremove = dsub.add_parser("remove", help="remove a source and every chunk of it")
    dremove.add_argument("name", help="the source's name as `docs list` shows it")
    dask = dsub.add_parser("ask", help="answer QUESTION from the server's documents, with citations")
    dask.add_argument("question")
    for p in (dadd, dlist, dremove, dask):
        p.add_argument("--server", type=int, required=True, metavar="ID", help="the Discord server (guild) id")
    return parser


def _labels(value: str) -> list[str]:
    labels = list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if len(labels) < 2:
        raise argparse.ArgumentTypeError("give at least two comma-separated labels, e.g. positive,negative")
    return labels


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bot.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        # Only names and reasons: a bad value may be a secret.
        problems = "; ".join(
            f"SWITCHBOARD_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        print(f"error: invalid settings: {problems}", file=sys.stderr)
        return 2
    except SettingsError as exc:
        # e.g. a list-valued variable that is not valid JSON; the message names the field, not its value.
        print(f"error: invalid settings: {exc}", file=sys.stderr)
        return 2
    # Libraries log at WARNING (their INFO is noise: quantizer chatter, HTTP lines); ours at the
    # configured level. discord.py's gateway lifecycle is worth seeing at INFO.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr
    )
    for name in ("bot", "cogs", "inference", "discord"):
        logging.getLogger(name).setLevel(settings.log_level.upper())
    try:
        return _dispatch(args, settings)
    except (ConfigError, InferenceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


class _ModelArgs(TypedDict):
    catalogue: Catalogue
    policy: RoutingPolicy
    cache_dir: Path
    env: Mapping[str, str]


def _dispatch(args: argparse.Namespace, settings: object) -> int:
    from bot.settings import Settings
    from inference import cli

    assert isinstance(settings, Settings)
    command = args.command or "run"
    if command == "run":
        if settings.discord_token is None:
            print("error: DISCORD_TOKEN is not set; put it in the environment or in .env", file=sys.stderr)
            return 2
        from bot.app import run_bot

        return run_bot(settings)
    if command == "docs":
        return asyncio.run(_docs(args, settings))
    env = settings.operator_env()
    catalogue, policy = cli.load_config(settings.catalogue_path, settings.routing_path, env)
    # What every model command needs; the operator's environment gives operator endpoints their keys.
    common = _ModelArgs(catalogue=catalogue, policy=policy, cache_dir=settings.cache_dir, env=env)
    if command == "route":
        return asyncio.run(cli.route_command(args.text, **common))
    if command == "ask":
        return asyncio.run(
            cli.ask_command(
                args.text,
                task=args.task,
                max_new_tokens=args.max_new_tokens,
                files=args.files,
                max_file_bytes=settings.max_attachment_bytes,
                **common,
            )
        )
    if command == "classify":
        return asyncio.run(cli.classify_command(args.text, args.labels, multi=args.multi, **common))
    if command == "json":
        return asyncio.run(cli.json_command(args.prompt, args.schema, max_new_tokens=args.max_new_tokens, **common))
    if command == "serve":
        from inference.serve_cli import serve_command
        from inference.serving.openai_api import ApiLimits

        key = settings.serve_api_key.get_secret_value() if settings.serve_api_key else None
        limits = ApiLimits(max_new_tokens=settings.max_new_tokens, max_prompt_chars=settings.max_prompt_chars)
        return asyncio.run(
            serve_command(
                host=args.host, port=args.port, api_key=key, limits=limits, warm=settings.warm_models, **common
            )
        )
    if args.models_command == "prepare":
        from inference.build.prepare import prepare_all

        prepare_all(catalogue, settings.cache_dir)
        print(f"models ready in {settings.cache_dir}", file=sys.stderr)
        return 0
    return cli.models_list(catalogue, policy)


async def _docs(args: argparse.Namespace, settings: object) -> int:
    """``docs ...`` on the bot's database, migrated first as the bot does at start."""
    from bot.settings import Settings
    from bot.storage.engine import migrate
    from inference import cli

    assert isinstance(settings, Settings)
    url = settings.resolved_database_url
    if url.startswith("sqlite") and settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    await migrate(url)
    action = args.docs_command
    if action == "add":
        return await cli.docs_add_command(
            args.paths, server_id=args.server, database_url=url, cache_dir=settings.cache_dir
        )
    if action == "list":
        return await cli.docs_list_command(server_id=args.server, database_url=url, json_output=args.json)
    if action == "remove":
        return await cli.docs_remove_command(args.name, server_id=args.server, database_url=url)
    env = settings.operator_env()
    catalogue, policy = cli.load_config(settings.catalogue_path, settings.routing_path, env)
    return await cli.docs_ask_command(
        args.question,
        server_id=args.server,
        database_url=url,
        catalogue=catalogue,
        policy=policy,
        cache_dir=settings.cache_dir,
        env=env,
    )


if __name__ == "__main__":
    sys.exit(main())
