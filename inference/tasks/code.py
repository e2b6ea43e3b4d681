"""Code: answers come fenced with their language; a long one also comes as a file (``answer.<ext>``)."""

from __future__ import annotations

import re
from typing import ClassVar

from inference.tasks.base import DATA_NOT_INSTRUCTIONS, Rendered, TaskPipeline
from inference.types import TaskId

#: Language tag -> file extension (also the languages a prompt may name).
EXTENSIONS: dict[str, str] = {
    "python": "py",
    "javascript": "js",
    "typescript": "ts",
    "rust": "rs",
    "go": "go",
    "java": "java",
    "kotlin": "kt",
    "c": "c",
    "cpp": "cpp",
    "csharp": "cs",
    "ruby": "rb",
    "php": "php",
    "swift": "swift",
    "bash": "sh",
    "sql": "sql",
    "html": "html",
    "css": "css",
    "json": "json",
    "yaml": "yaml",
    "lua": "lua",
    "r": "r",
}
_ALIASES = {
    "py": "python",
    "python3": "python",
    "js": "javascript",
    "node": "javascript",
    "ts": "typescript",
    "rs": "rust",
    "golang": "go",
    "c++": "cpp",
    "cc": "cpp",
    "c#": "csharp",
    "cs": "csharp",
    "sh": "bash",
    "shell": "bash",
    "zsh": "bash",
    "rb": "ruby",
    "yml": "yaml",
}
#: Telling first lines or keywords, in order (the first that matches names the language).
_HINTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("rust", re.compile(r"^\s*(?:fn\s+\w+\s*\(|use\s+std::|let\s+mut\s)", re.M)),
    ("go", re.compile(r"^\s*(?:package\s+main|func\s+\w+\s*\()", re.M)),
    ("cpp", re.compile(r"#include\s*<(?:iostream|vector|string)>|std::")),
    ("c", re.compile(r"#include\s*<\w+\.h>")),
    ("java", re.compile(r"\bpublic\s+(?:static\s+)?(?:class|void)\b")),
    ("python", re.compile(r"^\s*(?:def\s+\w+\s*\(|import\s+\w+|from\s+\w+\s+import|print\()", re.M)),
    ("javascript", re.compile(r"\b(?:function\s+\w+\s*\(|const\s+\w+\s*=|console\.log\()")),
    ("sql", re.compile(r"^\s*(?:SELECT|INSERT|UPDATE|CREATE TABLE)\b", re.M | re.I)),
    ("bash", re.compile(r"^#!/bin/(?:ba)?sh|^\s*(?:echo|sudo|apt-get|pip install)\s", re.M)),
)
_FENCE_OPEN = re.compile(r"^(\s*)(`{3,})([^\s`]*)[^\n`]*$", re.M)
#: Longer than this (lines or characters) and the code also comes as a file, which is easier to save and read.
LONG_LINES = 40
LONG_CHARS = 1500


def language_of(code: str, prompt: str = "") -> str:
    """The language tag for ``code``: named in the prompt, else guessed from the code; "" when unknown."""
    for word in re.findall(r"[\w+#]+", prompt.lower()):
        name = _ALIASES.get(word, word)
        if name in EXTENSIONS and name not in {"c", "r", "go"}:  # one-letter / common words need the code's word
            return name
    for name, hint in _HINTS:
        if hint.search(code):
            return name
    return ""


def _normal(tag: str) -> str:
    tag = tag.lower()
    return _ALIASES.get(tag, tag)


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block in ``text``; a block left open runs to the end."""
    blocks: list[tuple[str, str]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        ticks, lang = m.group(2), _normal(m.group(3))
        body: list[str] = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(ticks) and not lines[i].strip().strip("`")):
            body.append(lines[i])
            i += 1
        blocks.append((lang, "\n".join(body)))
        i += 1
    return blocks


class CodePipeline(TaskPipeline):
    task: ClassVar[TaskId] = "code"
    system = (
        "You are a careful programmer. Answer with working code in one fenced code block tagged with its "
        "language, then at most two short sentences. " + DATA_NOT_INSTRUCTIONS
    )
    temperature = 0.0
    # The reply is shown once written: the fences and the file are decided on the whole answer.
    streams = False

    def finish(self, text: str, *, prompt: str = "") -> Rendered:
        """Fence the code with its language; attach it as ``answer.<ext>`` when it is long."""
        body = text.strip()
        if not body:
            return Rendered("")
        blocks = code_blocks(body)
        if blocks:
            shown, code = body, max((c for _, c in blocks), key=len)
            lang = next((lang for lang, c in blocks if c == code and lang), "") or language_of(code, prompt)
            opened = _FENCE_OPEN.search(body)
            if opened is not None and not opened.group(3) and lang:  # an untagged first fence gets its language
                start, end = opened.span(3)
                shown = body[:start] + lang + body[end:]
        else:
            code = body
            lang = language_of(code, prompt)
            shown = f"```{lang}\n{code}\n```"
        files: tuple[tuple[str, bytes], ...] = ()
        if code.count("\n") + 1 > LONG_LINES or len(code) > LONG_CHARS:
            files = ((f"answer.{EXTENSIONS.get(lang, 'txt')}", (code.rstrip("\n") + "\n").encode()),)
        return Rendered(shown, files)
