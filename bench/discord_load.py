"""The Discord side under load: N members `/ask` at once through the fake Discord, against the real bot.

The bot is built as the end-to-end tests build it (tests/e2e/bot_harness.py: the real SwitchboardBot, its services
and storage on a SQLite file, a keyword classifier) with a fast scripted model (tests/fakes/backends.py
ScriptedBackend: a dozen pieces, each advancing the harness's fake clock by 0.1 s, so streaming edits happen without
any real sleeping). The fake Discord (tests/fakes/discord/) keeps its deadlines (3 s to acknowledge an interaction)
and rate limits: Discord-like bucket headers (5 requests per second per route and interaction token, which
discord.py waits out before it is refused) plus scripted 429s on the edits of answers (a quarter of the
interactions' first edits, and one global 429 on the webhooks) that discord.py must wait out and retry. Every
interaction comes from a different member, so the bot's own per-member limit does not refuse any of them.

Times are real (time.monotonic), from just before the fake sends INTERACTION_CREATE to when the fake has answered
the bot's callback (acknowledged) and the write that carries the answer's footer (complete).

    python bench/discord_load.py [--n 200] [--readme]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import discord
import discord.gateway
import discord.http
import yarl

from bench._readme import write_section
from inference.catalogue import Catalogue
from tests.e2e.bot_harness import BOT_LOGGERS, FOOTER_RE, Harness
from tests.fakes.backends import fake_catalogue
from tests.fakes.discord import FakeDiscord, RecordedRequest

ACK_DEADLINE_S = 3.0  # Discord drops an interaction not acknowledged within 3 s
PIECES = 12  # the scripted answer's streamed pieces
BUCKET_LIMIT, BUCKET_WINDOW_S = 5, 1.0  # the fake's per-route bucket (per interaction token for webhooks)
MODEL_CONCURRENCY = 16  # the scripted model serves this many at once (a batching server); the rest queue
RETRY_AFTER_S = 0.25  # each scripted 429's retry_after
TOKEN_RE = re.compile(r"^/(?:interactions/\d+|webhooks/\d+)/([^/]+)")


@dataclass
class Track:
    """What one interaction went through, in real seconds from when it was sent."""

    sent: float
    acked: float | None = None
    ack_status: int | None = None
    complete: float | None = None
    content: str | None = None
    error: str | None = None


@dataclass
class Watch:
    """Timestamps the fake's answers (a hook on its rate-limit headers, the last step of every handled call)."""

    fake: FakeDiscord
    tracks: dict[str, Track] = field(default_factory=dict)  # by interaction token
    done_at: dict[int, float] = field(default_factory=dict)  # request index -> answered at
    finished = 0

    def install(self) -> None:
        original = self.fake._rate_limit_headers

        def headers(record: RecordedRequest) -> dict[str, str]:
            self.answered(record)
            return original(record)

        self.fake._rate_limit_headers = headers  # type: ignore[method-assign]

    def answered(self, record: RecordedRequest) -> None:
        now = time.monotonic()
        self.done_at[record.index] = now
        found = TOKEN_RE.match(record.path)
        if found is None or record.method not in ("POST", "PATCH") or record.status is None:
            return
        # The bot may answer before send_interaction() has returned: the track's send time is filled in then.
        track = self.tracks.setdefault(found.group(1), Track(float("nan")))
        body = record.json or {}
        if record.path.endswith("/callback"):
            if track.ack_status is None or track.ack_status >= 300:
                track.acked, track.ack_status = now, record.status
            body = body.get("data") or {}
        if record.status >= 300 or not isinstance(body, dict):
            return
        content = body.get("content")
        if track.complete is None and isinstance(content, str):
            if FOOTER_RE.search(content):
                track.complete, track.content = now, content
                self.finished += 1
            elif content.startswith("⚠️") or "\n⚠️" in content:
                track.complete, track.error = now, content
                self.finished += 1
        self.fake.notify()


class LogCount(logging.Handler):
    """ERROR records (any is a failure) and the serving layer's "busy" warnings (a full model queue)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.records: list[str] = []
        self.busy = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.records.append(f"{record.name}: {record.getMessage()}")
        elif "QueueFull" in record.getMessage():
            self.busy += 1


def catalogue(n: int) -> Catalogue:
    """The e2e catalogue with queues as long as the load: this measures Discord, not the model's admission."""
    specs = fake_catalogue().model_dump()["models"]
    for spec in specs.values():
        spec["limits"] = {"max_concurrency": MODEL_CONCURRENCY, "max_queue": n}
    return Catalogue.model_validate({"models": specs})


@contextlib.asynccontextmanager
async def run_bot(fake: FakeDiscord, bot: discord.Client) -> AsyncIterator[discord.Client]:
    """tests/e2e/conftest.py's run_bot without pytest: start the bot, wait until ready, close it at exit."""
    task = asyncio.create_task(bot.start(fake.token), name="bot.start")
    try:
        await fake.wait_for(lambda: fake.identify_count > 0 or task.done(), 30, what="IDENTIFY")
        if task.done():
            task.result()
        await asyncio.wait_for(bot.wait_until_ready(), 30)
        yield bot
    finally:
        with contextlib.suppress(Exception):
            await bot.close()
        await asyncio.wait({task}, timeout=10)
        if not task.done():
            task.cancel()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def bench(n: int, tmp: Path) -> dict[str, Any]:
    peak_before = rss_mb()
    fake = FakeDiscord()
    await fake.start()
    # Process-wide class attributes, as the e2e fixture patches them: discord.py talks to the fake.
    discord.http.Route.BASE = fake.api_base  # type: ignore[misc]
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(fake.gateway_url)
    fake.enforce_deadlines = True
    fake.bucket_limit, fake.bucket_window = BUCKET_LIMIT, BUCKET_WINDOW_S
    edit_429 = fake.rate_limit(
        "PATCH", r"^/webhooks/\d+/[^/]+/messages/@original$", times=max(1, n // 4), retry_after=RETRY_AFTER_S
    )
    global_429 = fake.rate_limit(None, r"^/webhooks/", times=1, retry_after=RETRY_AFTER_S, global_=True)
    members = [fake.add_member(f"member{i:04d}") for i in range(n)]

    errors = LogCount()
    loggers = [logging.getLogger(name) for name in (*BOT_LOGGERS, "discord")]
    for logger in loggers:
        logger.addHandler(errors)

    harness = Harness(fake, lambda bot: run_bot(fake, bot), tmp)
    harness.catalogue = catalogue(n)
    reply = " ".join(f"piece{i}" for i in range(PIECES))
    harness.small.reply = reply
    harness.large.reply = reply
    watch = Watch(fake)
    watch.install()
    wall = time.monotonic()
    try:
        async with harness.running():

            async def ask(i: int) -> None:
                sent = time.monotonic()
                it = await fake.send_interaction("ask", {"prompt": f"hello number {i}"}, user=members[i])
                watch.tracks.setdefault(it.token, Track(sent)).sent = sent

            await asyncio.gather(*(ask(i) for i in range(n)))
            with contextlib.suppress(Exception):  # a timeout is reported in the table, not raised
                await fake.wait_for(lambda: watch.finished >= n, 120, what="every answer")
    finally:
        fake_rest_429 = [r for r in fake.requests if r.status == 429]
        await fake.close()
        for logger in loggers:
            logger.removeHandler(errors)
    wall = time.monotonic() - wall

    tracks = list(watch.tracks.values())
    acks = [t.acked - t.sent for t in tracks if t.acked is not None and t.ack_status is not None and t.ack_status < 300]
    completes = [t.complete - t.sent for t in tracks if t.content is not None and t.complete is not None]
    whole = [t for t in tracks if t.content is not None and FOOTER_RE.sub("", t.content) == reply]
    # A 429 was retried when the same call was made again later and succeeded.
    later_ok = {(r.method, r.path) for r in fake.requests if r.status is not None and r.status < 300}
    retried = sum(1 for r in fake_rest_429 if (r.method, r.path) in later_ok)
    return {
        "n": n,
        "sent": len(tracks),
        "acked_3s": sum(1 for a in acks if a <= ACK_DEADLINE_S),
        "acked": len(acks),
        "ack": acks,
        "complete": len(whole),
        "errors_shown": sum(1 for t in tracks if t.error is not None),
        "answer": completes,
        "r429": len(fake_rest_429),
        "r429_scripted": len(edit_429.hits) + len(global_429.hits),
        "retried": retried,
        "requests": len(fake.requests),
        "log_errors": len(errors.records),
        "busy": errors.busy,
        "models": Counter(
            m["model"].replace("\\", "") for t in tracks if t.content and (m := FOOTER_RE.search(t.content))
        ),
        "first_errors": errors.records[:3],
        "peak_before": peak_before,
        "peak_after": rss_mb(),
        "wall": wall,
    }


def run_one(n: int) -> dict[str, Any]:
    logging.basicConfig(level=logging.ERROR, format="%(name)s %(levelname)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="discord-load-") as tmp:
        return asyncio.run(bench(n, Path(tmp)))


def table(rows: list[dict[str, Any]]) -> str:
    def ms(v: float) -> str:
        return f"{v * 1000:.0f} ms"

    lines = [
        "| interactions sent | acknowledged within 3 s | ack p50 / p95 / max | answers complete (footer, full text) "
        "| complete p50 / p95 / max | served by | busy refusals | 429s returned / retried | REST calls | ERROR logs "
        "| peak RSS before -> after | wall |",
        "|---:|---:|---|---:|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        ack, ans = r["ack"], r["answer"]
        served = ", ".join(f"{model} {count}" for model, count in sorted(r["models"].items())) or "-"
        lines.append(
            f"| {r['sent']} | {r['acked_3s']}/{r['sent']} | {ms(pct(ack, 0.5))} / {ms(pct(ack, 0.95))} / "
            f"{ms(max(ack, default=float('nan')))} | {r['complete']}/{r['sent']} | {ms(pct(ans, 0.5))} / "
            f"{ms(pct(ans, 0.95))} / {ms(max(ans, default=float('nan')))} | {served} | {r['busy']} | "
            f"{r['r429']} / {r['retried']} | "
            f"{r['requests']} | {r['log_errors']} | {r['peak_before']:.0f} -> {r['peak_after']:.0f} MB | "
            f"{r['wall']:.1f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--n", type=int, nargs="+", default=[200], help="concurrent interactions (several: one run each)"
    )
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(name)s %(levelname)s: %(message)s")
    rows = []
    for n in args.n:
        # A fresh process per size: its peak RSS is its own, not the previous size's.
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            row = pool.submit(run_one, n).result()
        rows.append(row)
        for line in row["first_errors"]:
            print(f"n={n}: {line}", file=sys.stderr)
    out = table(rows)
    notes = (
        f"\nScripted model: {PIECES} pieces per answer (no real sleeping). Fake Discord: 3 s callback deadline, "
        f"buckets of {BUCKET_LIMIT} per {BUCKET_WINDOW_S:.0f} s per route and token, scripted 429s "
        f"(retry_after {RETRY_AFTER_S} s) on a quarter of the answers' first edits plus one global 429. "
        "Times from the interaction sent to the fake's answer; each size runs in a fresh process, whose peak RSS "
        "(bot and fake Discord together) is read after the imports and after the run."
    )
    print(out + "\n" + notes)
    if args.readme:
        write_section("discord_load", out + "\n" + notes)


if __name__ == "__main__":
    main()
