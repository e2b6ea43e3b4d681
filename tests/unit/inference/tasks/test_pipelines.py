"""Each task's pipeline: framing, generation settings, decoding constraint and post-processing."""

from __future__ import annotations

import pytest

from inference.tasks.base import Framing, pipeline_for
from inference.tasks.chat import PERSONA
from inference.tasks.choices import detect_choices
from inference.tasks.code import LONG_LINES, code_blocks, language_of
from inference.tasks.completion import text_to_continue
from inference.types import TASKS, ChatMessage


def test_every_task_has_its_own_pipeline() -> None:
    pipelines = {task: pipeline_for(task) for task in TASKS}
    assert all(p.task == task for task, p in pipelines.items())
    assert len({type(p) for p in pipelines.values()}) == len(TASKS)
    with pytest.raises(KeyError):
        pipeline_for("nonsense")  # type: ignore[arg-type]


def test_chat_keeps_its_persona_and_the_conversation() -> None:
    history = [ChatMessage("user", "hi"), ChatMessage("assistant", "hello")]
    prepared = pipeline_for("chat").prepare("how are you?", history=history, max_new_tokens=300)
    assert prepared.messages == [ChatMessage("system", PERSONA), *history, ChatMessage("user", "how are you?")]
    assert prepared.params.max_new_tokens == 300 and not prepared.params.raw and prepared.params.constraint is None
    # A channel's own system prompt is chat's persona, as before.
    own = pipeline_for("chat").prepare("hi", persona="Be terse.")
    assert own.messages[0] == ChatMessage("system", "Be terse.")


def test_other_tasks_put_their_instructions_after_a_channel_prompt() -> None:
    prepared = pipeline_for("conversion").prepare("translate to German: cat", persona="Be terse.")
    system = prepared.messages[0].content
    assert system.startswith("Be terse.\n\n") and "converted text only" in system
    # Few-shot examples come before the request; a one-shot transformation ignores the history.
    with_history = pipeline_for("conversion").prepare("x", history=[ChatMessage("user", "old")])
    assert ChatMessage("user", "old") not in with_history.messages
    assert [m.role for m in with_history.messages] == ["system", "user", "assistant", "user", "assistant", "user"]


def test_a_servers_framing_overrides_the_defaults() -> None:
    framing = Framing(system="Only French.", temperature=0.9, max_new_tokens=40, examples=(("a", "b"),))
    prepared = pipeline_for("conversion").prepare("hello", framing=framing, max_new_tokens=512)
    assert prepared.messages[0].content == "Only French."
    assert prepared.messages[1:3] == [ChatMessage("user", "a"), ChatMessage("assistant", "b")]
    assert (prepared.params.temperature, prepared.params.max_new_tokens) == (0.9, 40)
    # The model's own limit still wins over a larger framing.
    assert (
        pipeline_for("chat").prepare("x", framing=Framing(max_new_tokens=900), max_new_tokens=100).params.max_new_tokens
        == 100
    )


def test_framing_from_stored_reads_only_what_was_set() -> None:
    assert Framing.from_stored({}) is None and Framing.from_stored(None) is None
    assert Framing.from_stored({"temperature": 0.3, "junk": 1}) == Framing(temperature=0.3)


def test_completion_is_a_raw_continuation_without_framing() -> None:
    prepared = pipeline_for("completion").prepare(
        "Continue this story: Once upon a time", history=[ChatMessage("user", "x")]
    )
    assert prepared.messages == [ChatMessage("user", "Once upon a time")]
    assert prepared.params.raw and prepared.params.temperature > 0 and prepared.params.constraint is None
    assert pipeline_for("completion").finish(" and then.\n\n").text == " and then."
    assert text_to_continue("complete the sentence: The sky is") == "The sky is"
    assert text_to_continue("The quick brown fox") == "The quick brown fox"


@pytest.mark.parametrize(
    ("prompt", "choices"),
    [
        ("Is the sky blue? Answer only yes or no.", ("yes", "no")),
        ("Which is right? Reply with only the letter A-D.", ("A", "B", "C", "D")),
        ("Reply with true or false: 2 + 2 = 4", ("true", "false")),
        ("Rate it: a number from 1 to 5", ("1", "2", "3", "4", "5")),
        ("Tell me about the sky", None),
    ],
)
def test_grammar_requests_for_a_fixed_set_are_constrained_to_it(prompt: str, choices: tuple[str, ...] | None) -> None:
    constraint = pipeline_for("grammar").prepare(prompt).params.constraint
    if choices is None:
        assert constraint is None
    else:
        assert constraint is not None and constraint.kind == "choice" and tuple(constraint.choices) == choices


def test_grammar_json_is_shown_pretty_in_a_json_block() -> None:
    assert pipeline_for("grammar").finish('{"a":1}').text == '```json\n{\n  "a": 1\n}\n```'
    assert pipeline_for("grammar").finish(" yes \n").text == "yes"


def test_classification_holds_to_the_labels_named_and_shows_the_bare_label() -> None:
    pipeline = pipeline_for("classification")
    constraint = pipeline.prepare("Classify this review as positive, negative or neutral: great!").params.constraint
    assert constraint is not None and tuple(constraint.choices) == ("positive", "negative", "neutral")
    assert pipeline.finish(" Positive.\nBecause it is nice").text == "Positive"
    assert not pipeline.streams and pipeline.prepare("x").params.max_new_tokens <= 16


def test_detect_choices_leaves_ordinary_questions_alone() -> None:
    assert detect_choices("Should I learn Python or Rust?") is None
    assert detect_choices("Label it as spam or ham", lists=True) == ("spam", "ham")


def test_code_without_fences_is_fenced_with_its_language() -> None:
    rendered = pipeline_for("code").finish("def f():\n    return 1", prompt="a function")
    assert rendered.text == "```python\ndef f():\n    return 1\n```" and rendered.files == ()


def test_code_an_untagged_fence_gets_the_language_the_prompt_names() -> None:
    text = "Here:\n```\nfn main() {}\n```\nDone."
    assert pipeline_for("code").finish(text, prompt="in rust please").text == "Here:\n```rust\nfn main() {}\n```\nDone."


def test_long_code_also_comes_as_a_file_named_by_its_language() -> None:
    code = "\n".join(f"let x{i} = {i};" for i in range(LONG_LINES + 5))
    rendered = pipeline_for("code").finish(f"```js\n{code}\n```")
    assert rendered.files == (("answer.js", (code + "\n").encode()),)
    assert rendered.text.startswith("```js\n")


def test_code_blocks_and_language_guesses() -> None:
    assert code_blocks("a\n```go\npackage main\n```\nb\n```\nx") == [("go", "package main"), ("", "x")]
    assert language_of("#include <stdio.h>") == "c" and language_of("SELECT 1") == "sql"
    assert language_of("x", prompt="in typescript") == "typescript" and language_of("hmm") == ""


@pytest.mark.parametrize(
    ("task", "words"),
    [
        ("rag", "No documents are indexed on this server yet"),
        ("tool_use", "can't look things up or run tools"),
        ("agent", "start one with `/agent goal`"),
    ],
)
def test_unfilled_tasks_say_honestly_what_they_cannot_do(task: str, words: str) -> None:
    prepared = pipeline_for(task).prepare("anything")  # type: ignore[arg-type]
    assert prepared.notice is not None and words in prepared.notice and "chat" in prepared.notice
    assert prepared.messages == []  # no model is asked to guess
