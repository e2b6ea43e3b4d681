"""The tool loop: generate, run the calls the model asks for, give it the results, until it answers.

:func:`run_with_tools` picks the calling protocol by the model that serves the request:

- an OpenAI-compatible endpoint gets the native ``tools``/``tool_calls`` protocol, up to ``max_rounds`` rounds,
  the calls of one round run in parallel; once the rounds (or the time) are spent, one last answer is asked
  with tools off. An endpoint that refuses ``tools`` (400/422) is asked again under the grammar;
- a local model gets the grammar: one JSON choice of tool and arguments that always parses
  (:meth:`inference.tasks.tool_use.ToolUsePipeline.prepare_grammar`), the tool runs, and the answer is composed
  from the result (exact, and no second generation for a 135M model to garble). An endpoint on the grammar
  path writes a second answer from the result instead.

Results go back to the model as JSON data. Every call is validated and time-limited by the
:class:`~inference.tools.base.ToolBox`; the whole loop is bounded by ``time_limit_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from inference.errors import BackendTimeout, InferenceError
from inference.structured import generate
from inference.tasks.tool_use import ToolUsePipeline, read_choice
from inference.tools.base import Confirm, ToolBox, ToolResult
from inference.types import ChatMessage, RouteDecision, ToolCall

if TYPE_CHECKING:
    from inference.catalogue import Catalogue, RoutingOverrides
    from inference.serving.service import Answer, Switchboard
    from inference.tasks.base import Framing

log = logging.getLogger(__name__)

#: Most calls run from one round; the rest get an error result (the model may ask again next round).
MAX_CALLS_PER_ROUND = 8
#: Statuses with which an endpoint says it does not take ``tools``.
_TOOLS_REFUSED = frozenset({400, 422})


@dataclass
class ToolRun:
    """What a tool-using request came to: the answer, every call with its result, and the last generation."""

    text: str
    results: list[ToolResult] = field(default_factory=list)
    #: The last generation (who answered, timings) for the route line; None when none ran.
    answer: Answer | None = None
    protocol: Literal["native", "grammar"] = "native"
    rounds: int = 0
    notes: list[str] = field(default_factory=list)


async def run_with_tools(
    board: Switchboard,
    decision: RouteDecision,
    prompt: str,
    toolbox: ToolBox,
    *,
    history: Sequence[ChatMessage] = (),
    framing: Framing | None = None,
    persona: str | None = None,
    max_new_tokens: int = 512,
    max_rounds: int = 3,
    time_limit_s: float = 300.0,
    on_result: Callable[[ToolResult], None] | None = None,
    compose: bool | None = None,
    overrides: RoutingOverrides | None = None,
    catalogue: Catalogue | None = None,
    confirm: Confirm | None = None,
) -> ToolRun:
    """Answer ``prompt`` with the tools in ``toolbox``; ``on_result`` sees each result as soon as it exists.

    ``compose``: on the grammar path, write the answer from the results (default for local models) rather
    than by a second generation (default for endpoints). ``confirm`` asks the person before a call that acts
    (:attr:`~inference.tools.base.Tool.acts`); without it such calls are refused.
    """
    runner = _Runner(board, decision, toolbox, on_result, overrides, catalogue, confirm)
    native = runner.is_endpoint()
    try:
        async with asyncio.timeout(time_limit_s):
            if native:
                try:
                    return await runner.native(prompt, history, framing, persona, max_new_tokens, max_rounds)
                except InferenceError as exc:
                    if runner.results:  # tools already ran: their effects can't be repeated elsewhere
                        raise
                    if exc.status in _TOOLS_REFUSED:
                        log.info("%s refused tools (HTTP %s); calling under the grammar", decision.model, exc.status)
                        runner.notes.append(f"{decision.model} does not take tools; the call was made under a grammar")
                    elif exc.fallback and (other := runner.fallback()) is not None:
                        # The other tier answers, with the protocol its model has (the grammar, for a local one).
                        runner.notes.append(
                            f"the {decision.tier.value} tier failed ({exc.short}); the {other.tier.value} tier answered"
                        )
                        runner.decision = other
                        native = runner.is_endpoint()
                        if native:
                            return await runner.native(prompt, history, framing, persona, max_new_tokens, max_rounds)
                    else:
                        raise
            compose = (not native) if compose is None else compose
            return await runner.grammar(prompt, history, framing, persona, max_new_tokens, compose)
    except TimeoutError:
        raise BackendTimeout(f"tool use took longer than {time_limit_s:g}s", backend=decision.model) from None


def other_tier(board: Switchboard, decision: RouteDecision, overrides: RoutingOverrides | None) -> RouteDecision | None:
    """The other tier's model for this request (the server's overrides applied), or None when it is the same."""
    policy = board.router.policy
    if overrides is not None:
        policy = overrides.apply(policy)
    model = board.resolve(policy.models[decision.tier.other])
    if model == decision.model:
        return None
    return replace(decision, tier=decision.tier.other, model=model)


def is_endpoint(board: Switchboard, decision: RouteDecision, catalogue: Catalogue | None) -> bool:
    """Whether the chosen model is an OpenAI-compatible endpoint (the native tools protocol) or a local model."""
    return (catalogue or board.catalogue).get(decision.model).kind == "openai"


class _Runner:
    def __init__(
        self,
        board: Switchboard,
        decision: RouteDecision,
        toolbox: ToolBox,
        on_result: Callable[[ToolResult], None] | None,
        overrides: RoutingOverrides | None,
        catalogue: Catalogue | None,
        confirm: Confirm | None = None,
    ) -> None:
        self.board, self.decision, self.toolbox = board, decision, toolbox
        self.confirm = confirm
        self.on_result = on_result
        self.overrides, self.catalogue = overrides, catalogue
        self.pipeline = ToolUsePipeline()
        self.results: list[ToolResult] = []
        self.notes: list[str] = []

    def fallback(self) -> RouteDecision | None:
        return other_tier(self.board, self.decision, self.overrides)

    def is_endpoint(self) -> bool:
        return is_endpoint(self.board, self.decision, self.catalogue)

    async def _run_calls(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        batch = await self.toolbox.execute_all(calls[:MAX_CALLS_PER_ROUND], confirm=self.confirm)
        batch += [
            ToolResult(call, False, f"not run: at most {MAX_CALLS_PER_ROUND} tool calls at once")
            for call in calls[MAX_CALLS_PER_ROUND:]
        ]
        for result in batch:
            self.results.append(result)
            if self.on_result is not None:
                self.on_result(result)
        return batch

    async def native(
        self,
        prompt: str,
        history: Sequence[ChatMessage],
        framing: Framing | None,
        persona: str | None,
        max_new_tokens: int,
        max_rounds: int,
    ) -> ToolRun:
        prepared = self.pipeline.prepare(
            prompt, history=history, framing=framing, max_new_tokens=max_new_tokens, persona=persona, tools=self.toolbox
        )
        convo, params = list(prepared.messages), prepared.params
        answer: Answer | None = None
        for round_ in range(1, max_rounds + 1):
            answer = self.board.answer(
                self.decision,
                convo,
                params=params,
                overrides=self.overrides,
                catalogue=self.catalogue,
                allow_fallback=False,  # run_with_tools falls back itself, with the protocol the other model has
            )
            text = "".join([piece async for piece in answer])
            if not answer.tool_calls:
                return self._done(text, answer, round_)
            calls = list(answer.tool_calls)
            batch = await self._run_calls(calls)
            convo.append(ChatMessage("assistant", text, tool_calls=tuple(calls)))
            convo += [ChatMessage("tool", r.for_model(), tool_call_id=r.call.id) for r in batch]
        # Rounds spent: one last answer from what the tools found, with tools off.
        self.notes.append(f"stopped calling tools after {max_rounds} rounds")
        final = replace(params, tool_choice="none")
        answer = self.board.answer(
            self.decision, convo, params=final, overrides=self.overrides, catalogue=self.catalogue, allow_fallback=False
        )
        text = "".join([piece async for piece in answer])
        return self._done(text, answer, max_rounds + 1)

    def _done(self, text: str, answer: Answer, rounds: int) -> ToolRun:
        text = text.strip()
        if not text and self.results:  # a model that called tools and then said nothing
            text = self.pipeline.compose(self.results, self.toolbox)
        return ToolRun(text, list(self.results), answer, "native", rounds, [*self.notes, *answer.notes])

    async def grammar(
        self,
        prompt: str,
        history: Sequence[ChatMessage],
        framing: Framing | None,
        persona: str | None,
        max_new_tokens: int,
        compose: bool,
    ) -> ToolRun:
        prepared = self.pipeline.prepare_grammar(prompt, self.toolbox, history=history)
        assert prepared.params.constraint is not None
        result = await generate(
            self.board,
            self.decision,
            prepared.messages,
            prepared.params.constraint,
            params=replace(prepared.params, constraint=None),
            overrides=self.overrides,
            catalogue=self.catalogue,
        )
        notes = [*self.notes, *result.answer.notes]
        choice = read_choice(result.value)
        if isinstance(choice, str):  # the model chose to answer directly
            return ToolRun(choice, [], result.answer, "grammar", 1, notes)
        batch = await self._run_calls([choice])
        if compose:
            return ToolRun(self.pipeline.compose(batch, self.toolbox), batch, result.answer, "grammar", 1, notes)
        again = self.pipeline.prepare_answer(
            prompt, batch, history=history, framing=framing, max_new_tokens=max_new_tokens, persona=persona
        )
        # The model that chose the tool writes the answer (no fallback: the result is already in hand).
        decision = replace(self.decision, tier=result.answer.tier, model=result.answer.model)
        answer = self.board.answer(
            decision,
            again.messages,
            params=again.params,
            overrides=self.overrides,
            catalogue=self.catalogue,
            allow_fallback=False,
        )
        text = "".join([piece async for piece in answer]).strip() or self.pipeline.compose(batch, self.toolbox)
        return ToolRun(text, batch, answer, "grammar", 2, [*notes, *answer.notes])
