"""The everyday commands and message context menus: classify, translate, summarize, rewrite, JSON, fix, explain.

Discord-agnostic like :mod:`bot.delivery`: plain strings and an :class:`~bot.delivery.Ask` (who asks, where)
in, a :class:`~bot.delivery.Target` to answer into. Free-text answers go through :class:`~bot.delivery.Delivery`
(rate limit, routing with the task forced, streaming, footer, record); structured ones (labels, a JSON
document, a fixed choice, a regular expression) through :mod:`inference.structured`, with the same checks and
the same footer. The input parsers raise :class:`~bot.answering.UserError` with the words the user sees.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.answering import AnswerService, Scope, UserError
from bot.delivery import Ask, Delivery, Edit, Target
from bot.replies import StreamingReply, footer
from bot.settings import Settings
from inference import structured
from inference.errors import InferenceError
from inference.languages import Language, find
from inference.tasks.base import pipeline_for
from inference.types import Constraint, Request, RouteDecision, TaskId, Tier

log = logging.getLogger(__name__)

#: /classify: how many labels one request may name, and how long each may be.
MIN_LABELS, MAX_LABELS, MAX_LABEL_CHARS = 2, 20, 64
#: /classify file: at most this many lines, from a text file of at most this size.
MAX_LINES, MAX_FILE_BYTES = 50, 64 * 1024
#: /summarize last: how many of the channel's latest messages.
MAX_LAST = 50
#: /json: the largest schema file or inline schema accepted (the structured module checks the rest).
MAX_SCHEMA_BYTES = 16 * 1024
ONE_FORMAT = "Give exactly one of `schema` (JSON text), `schema_file` (a .json file), `choices` or `regex`."
#: Text files the commands read (Discord does not always send a content type: the extension counts too).
TEXT_TYPES = ("text/", "application/json")
TEXT_SUFFIXES = (".txt", ".md", ".csv", ".tsv", ".json", ".jsonl", ".log")

#: /rewrite's styles: the choice's value -> what the model is asked for.
STYLES: dict[str, str] = {
    "formal": "more formal and professional",
    "casual": "more casual and relaxed",
    "shorter": "shorter, keeping every point",
    "clearer": "clearer and easier to follow",
    "friendlier": "friendlier and warmer",
    "simpler": "simpler, in plain words",
    "persuasive": "more persuasive",
}

_LINK = re.compile(
    r"^<?https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(@me|\d+)/(\d+)/(\d+)/?>?$", re.IGNORECASE
)
_CODE_LINE = re.compile(
    r"^\s*(?:def |class |import |from \S+ import|#include|function |const |let |var |public |private |return\b)"
    r"|[;{}]\s*$|=>|==|\)\s*:\s*$"
)


# --- input parsing (pure) ------------------------------------------------------------------------------


def parse_labels(text: str) -> list[str]:
    """Comma-separated labels: 2..20 distinct ones, each at most 64 characters."""
    labels = [label.strip() for label in text.split(",") if label.strip()]
    if not labels:
        raise UserError("Give the labels to choose from, separated by commas (e.g. `positive, negative`).")
    if len(labels) < MIN_LABELS:
        raise UserError(f"Give at least {MIN_LABELS} labels to choose from, separated by commas (only `{labels[0]}`).")
    if len(labels) > MAX_LABELS:
        raise UserError(f"At most {MAX_LABELS} labels at once ({len(labels)} given).")
    seen: set[str] = set()
    for label in labels:
        if len(label) > MAX_LABEL_CHARS:
            raise UserError(f"Labels may be at most {MAX_LABEL_CHARS} characters each.")
        if label.casefold() in seen:
            raise UserError(f"`{label}` is listed twice: each label once.")
        seen.add(label.casefold())
    return labels


def is_text_file(filename: str, content_type: str | None) -> bool:
    return (content_type or "").startswith(TEXT_TYPES) or filename.lower().endswith(TEXT_SUFFIXES)


def check_text_file(filename: str, content_type: str | None, size: int, limit: int = MAX_FILE_BYTES) -> None:
    """Before downloading: a text file of at most ``limit`` bytes."""
    if not is_text_file(filename, content_type):
        raise UserError(f"`{filename}` isn't a text file: attach a .txt file with one item per line.")
    if size > limit:
        raise UserError(f"`{filename}` is too large ({size:,} bytes); at most {limit:,} bytes.")


def decode_text(filename: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"`{filename}` isn't UTF-8 text.") from None


def lines_of(filename: str, data: bytes) -> list[str]:
    """The non-blank lines of a text file: 1..50 of them."""
    lines = [line.strip() for line in decode_text(filename, data).splitlines() if line.strip()]
    if not lines:
        raise UserError(f"`{filename}` has no lines of text.")
    if len(lines) > MAX_LINES:
        raise UserError(f"`{filename}` has {len(lines)} lines; at most {MAX_LINES} at once.")
    return lines


def language(text: str) -> Language:
    found = find(text)
    if found is None:
        raise UserError(f"I don't know the language `{text.strip()[:40]}`: pick one from the list.")
    return found


def constraint_from(
    *,
    schema: str | None = None,
    schema_file: tuple[str, bytes] | None = None,
    choices: str | None = None,
    regex: str | None = None,
) -> Constraint:
    """/json's constraint from exactly one of: an inline schema, a schema file, comma-separated choices, a regex."""
    if sum(v is not None for v in (schema, schema_file, choices, regex)) != 1:
        raise UserError(ONE_FORMAT)
    try:
        if choices is not None:
            return structured.choice_constraint(parse_labels(choices))
        if regex is not None:
            return structured.regex_constraint(regex)
        if schema_file is not None:
            name, data = schema_file
            if len(data) > MAX_SCHEMA_BYTES:
                raise UserError(f"`{name}` is too large ({len(data):,} bytes); a schema may be {MAX_SCHEMA_BYTES:,}.")
            text, where = decode_text(name, data), f"`{name}`"
        else:
            text, where = schema or "", "The schema"
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{where} isn't valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
        return structured.json_constraint(structured.check_schema(document))
    except structured.SchemaError as exc:
        raise UserError(f"{exc.user_text} {exc}".strip()) from None


@dataclass(frozen=True)
class MessageLink:
    guild_id: int | None  # None: a direct message ("@me")
    channel_id: int
    message_id: int


def parse_message_link(text: str) -> MessageLink:
    match = _LINK.match(text.strip())
    if match is None:
        raise UserError(
            "That isn't a message link: use **Copy Message Link** on a message (`https://discord.com/channels/…/…/…`)."
        )
    guild, channel, message = match.groups()
    return MessageLink(None if guild == "@me" else int(guild), int(channel), int(message))


def transcript(messages: Sequence[tuple[str, str]], budget: int) -> tuple[str, int]:
    """``author: text`` lines, oldest first, the newest that fit ``budget`` characters; and how many were left out."""
    kept: list[str] = []
    used = 0
    for author, text in reversed(messages):
        line = f"{author}: {' '.join(text.split())}"
        if used + len(line) + 1 > budget:
            break
        kept.append(line)
        used += len(line) + 1
    kept.reverse()
    return "\n".join(kept), len(messages) - len(kept)


def looks_like_code(text: str) -> bool:
    if "```" in text:
        return True
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) >= 2 and sum(bool(_CODE_LINE.search(line)) for line in lines) * 3 >= len(lines)


def word_diff(before: str, after: str, *, context: int = 3) -> str:
    """What changed, word by word: each change as a ``-`` line and a ``+`` line with a few words around it."""
    a, b = before.split(), after.split()
    out: list[str] = []
    for group in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_grouped_opcodes(context):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        lead = "… " if i1 > 0 else ""
        tail_a = " …" if i2 < len(a) else ""
        tail_b = " …" if j2 < len(b) else ""
        out.append(f"- {lead}{' '.join(a[i1:i2])}{tail_a}".rstrip())
        out.append(f"+ {lead}{' '.join(b[j1:j2])}{tail_b}".rstrip())
    return "\n".join(out)


def format_labels(result: structured.LabelResult, *, every_score: bool) -> str:
    """The chosen labels; with log-probabilities, the score of every label (or, per line, of the chosen ones)."""
    scores = result.scores
    if not any(0.0 < s < 1.0 for s in scores.values()):  # no log-probabilities: 1/0 would repeat the answer
        return ", ".join(f"`{label}`" for label in result.labels) or "*(none of the labels)*"
    if not every_score:
        return ", ".join(f"`{label}` {scores.get(label, 0.0):.2f}" for label in result.labels)
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    shown = ", ".join(f"`{label}`" for label in result.labels)
    return shown + "\n" + " · ".join(f"{label} {score:.2f}" for label, score in ranked)


def format_value(constraint: Constraint, result: structured.StructuredResult) -> str:
    if constraint.kind == "json_schema":
        return "```json\n" + json.dumps(result.value, indent=2, ensure_ascii=False) + "\n```"
    if constraint.kind == "choice":
        return f"`{result.value}`"
    return "```\n" + _defenced(str(result.value)) + "\n```"


# --- prompts ---------------------------------------------------------------------------------------------


def translate_prompt(text: str, to: Language) -> str:
    return f"Translate the following text into {to.name}. Answer with the translation only.\n\n{text}"


def summary_prompt(text: str, *, conversation: bool = False) -> str:
    what = "conversation (one message per line, `author: text`)" if conversation else "text"
    return f"Summarize the following {what} in a few short sentences.\n\n{text}"


def rewrite_prompt(text: str, style: str) -> str:
    return f"Rewrite the following text to make it {STYLES[style]}. Answer with the rewritten text only.\n\n{text}"


def fix_prompt(text: str) -> str:
    return (
        "Correct the spelling and grammar of the following text. Keep its meaning, wording and tone; "
        f"answer with the corrected text only.\n\n{text}"
    )


def explain_prompt(text: str) -> tuple[str, TaskId]:
    if looks_like_code(text):
        return f"Explain what this code does, step by step.\n\n{text}", "code"
    return f"Explain this message in plain words: what it says and any terms it uses.\n\n{text}", "chat"


def _defenced(text: str) -> str:
    """Text that cannot close the code block it is shown in."""
    return text.replace("```", "`\u200b``")


def _unquoted(text: str) -> str:
    """The model's corrected text without a fence or quotes it may have wrapped it in."""
    text = text.strip()
    fenced = re.fullmatch(r"```[\w+-]*\n(.*?)\n?```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


class _Capture:
    """A Target whose messages are only recorded (refusals pass through): the answer is post-processed first."""

    def __init__(self, target: Target) -> None:
        self.contents: list[str] = []
        self.target = Target(edit=self._edit(0), send=self._send, refuse=target.refuse)

    def _edit(self, index: int) -> Edit:
        async def edit(content: str) -> None:
            self.contents[index] = content

        self.contents.append("")
        return edit

    async def _send(self, content: str) -> Edit:
        edit = self._edit(len(self.contents))
        await edit(content)
        return edit


class EverydayService:
    def __init__(
        self,
        answers: AnswerService,
        delivery: Delivery,
        settings: Settings,
        clock: Callable[[], float],
    ) -> None:
        self.answers = answers
        self.delivery = delivery
        self.settings = settings
        self.clock = clock

    async def prompt_budget(self, guild_id: int | None) -> int:
        """How many characters a prompt may have on this server."""
        config = (await self.answers.scope(guild_id)).config
        return min(config.max_prompt_chars, self.settings.max_prompt_chars)

    # -- free text, through the delivery path -----------------------------------------------------------

    async def translate(self, target: Target, ask: Ask, text: str, to: Language) -> None:
        await self._free(target, ask, text, translate_prompt(text, to), "conversion", "translate")

    async def summarize(self, target: Target, ask: Ask, text: str, *, conversation: bool = False) -> None:
        await self._free(target, ask, text, summary_prompt(text, conversation=conversation), "conversion", "summarize")

    async def rewrite(self, target: Target, ask: Ask, text: str, style: str) -> None:
        if style not in STYLES:
            await target.refuse(f"Pick a style from the list: {', '.join(STYLES)}.")
            return
        await self._free(target, ask, text, rewrite_prompt(text, style), "conversion", "rewrite")

    async def explain(self, target: Target, ask: Ask, text: str) -> None:
        prompt, task = explain_prompt(text)
        await self._free(target, ask, text, prompt, task, "explain")

    async def _free(self, target: Target, ask: Ask, text: str, prompt: str, task: TaskId, verb: str) -> None:
        if not text.strip():
            await target.refuse(f"There's no text to {verb}.")
            return
        await self.delivery.deliver(target, replace(ask, prompt=prompt, task=task, attachments=()))

    async def fix(self, target: Target, ask: Ask, text: str) -> None:
        """Corrected text, then what changed as a word diff (the answer is collected, not streamed)."""
        if not text.strip():
            await target.refuse("There's no text to correct.")
            return
        capture = _Capture(target)
        outcome = await self.delivery.deliver(capture.target, replace(ask, prompt=fix_prompt(text), task="conversion"))
        if outcome is None:
            return  # refused: the requester was told
        # The last line of the reply: the route footer, or the honest error note the delivery wrote.
        trailer = next((c for c in reversed(capture.contents) if c), "").rsplit("\n", 1)[-1]
        if not outcome.ok:
            await target.edit(trailer)
            return
        corrected = _unquoted(outcome.text)
        diff = _defenced(word_diff(text, corrected))
        if not corrected:
            body = "*(the model returned an empty answer)*"
        elif not diff:
            body = "No spelling or grammar mistakes found."
        else:
            body = f"{corrected}\n```diff\n{diff}\n```"
        await self._show(target, body, trailer)

    # -- structured ---------------------------------------------------------------------------------------

    async def classify(
        self, target: Target, ask: Ask, texts: Sequence[str], labels: Sequence[str], multi: bool
    ) -> None:
        """One (or several) of ``labels`` for each text; many texts answer one numbered line each."""
        admitted = await self.delivery.admit(target, ask, texts)
        if admitted is None:
            return
        scope, requests = admitted
        decision = self.answers.route(Request(text="\n".join(r.text for r in requests)), scope, task="classification")
        results: list[structured.LabelResult] = []

        async def run() -> None:
            for request in requests:
                results.append(
                    await structured.classify(
                        self.answers.board,
                        decision,
                        request.text,
                        labels,
                        multi=multi,
                        overrides=scope.overrides,
                        catalogue=scope.catalogue,
                    )
                )

        def render() -> str:
            if len(results) == 1:
                return format_labels(results[0], every_score=True)
            return "\n".join(f"{i}. {format_labels(r, every_score=False)}" for i, r in enumerate(results, 1))

        answers = lambda: [r.answer for r in results if r.answer is not None]  # noqa: E731
        await self._structured(target, ask, scope, decision, run, render, answers)

    async def generate(self, target: Target, ask: Ask, prompt: str, constraint: Constraint) -> None:
        """A document (or choice, or match) that satisfies ``constraint``, validated, in a code block."""
        admitted = await self.delivery.admit(target, ask, [prompt])
        if admitted is None:
            return
        scope, (request,) = admitted
        decision = self.answers.route(request, scope, task="grammar")
        spec = scope.catalogue.get(decision.model)
        prepared = pipeline_for(decision.task).prepare(
            _with_format(request.text, constraint),
            max_new_tokens=min(self.settings.max_new_tokens, spec.max_new_tokens),
        )
        results: list[structured.StructuredResult] = []

        async def run() -> None:
            results.append(
                await structured.generate(
                    self.answers.board,
                    decision,
                    prepared.messages,
                    constraint,
                    params=prepared.params,
                    overrides=scope.overrides,
                    catalogue=scope.catalogue,
                )
            )

        def render() -> str:
            return format_value(constraint, results[0])

        await self._structured(target, ask, scope, decision, run, render, lambda: [r.answer for r in results])

    async def _structured(
        self,
        target: Target,
        ask: Ask,
        scope: Scope,
        decision: RouteDecision,
        run: Callable[[], Awaitable[None]],
        render: Callable[[], str],
        answers: Callable[[], list[Any]],
    ) -> None:
        started, shown_from = time.perf_counter(), self.clock()
        ok = False
        try:
            await run()
            ok = True
        except structured.SchemaError as exc:  # the labels or pattern, refused by the structured module
            await target.refuse(f"{exc.user_text} {exc}")
        except InferenceError as exc:
            log.warning("structured request failed: %s: %s", type(exc).__name__, exc)
            await target.edit(f"⚠️ {exc.user_text}")
        finally:
            done = answers()
            last = done[-1] if done else None
            tier = last.tier if last is not None else decision.tier
            model = last.model if last is not None else decision.model
            fell_back = any(a.fell_back for a in done)
            await self._record(ask, decision.task, tier, model, started, ok, fell_back)
        if ok:
            notes = list(dict.fromkeys(n for a in done for n in a.notes))
            trailer = footer(decision.task, tier.value, model, self.clock() - shown_from, "; ".join(notes) or None)
            await self._show(target, render(), trailer)

    async def _record(
        self, ask: Ask, task: TaskId, tier: Tier, model: str, started: float, ok: bool, fell_back: bool
    ) -> None:
        if ask.guild_id is None:
            return
        try:
            await self.answers.store.record_request(
                guild_id=ask.guild_id,
                user_id=ask.user_id,
                task=task,
                tier=tier,
                model=model,
                latency_ms=(time.perf_counter() - started) * 1000,
                ok=ok,
                fallback=fell_back,
            )
        except Exception:
            log.exception("recording a structured request failed")

    async def _show(self, target: Target, text: str, trailer: str) -> None:
        reply = StreamingReply(
            target.edit,
            target.send,
            clock=self.clock,
            max_messages=self.settings.max_reply_messages,
            upload=target.upload,
        )
        await reply.push(text)
        await reply.finish(trailer)


def _with_format(prompt: str, constraint: Constraint) -> str:
    """The request plus the format it must take: constrained decoding enforces it, the words help the model."""
    if constraint.kind == "json_schema":
        schema = json.dumps(constraint.schema, separators=(",", ":"))
        return f"{prompt}\n\nAnswer with one JSON document valid against this JSON Schema:\n{schema}"
    if constraint.kind == "choice":
        return f"{prompt}\n\nAnswer with exactly one of: {', '.join(constraint.choices)}."
    return f"{prompt}\n\nAnswer with text matching the regular expression {constraint.pattern}"
