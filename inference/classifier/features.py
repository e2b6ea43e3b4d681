"""The classifier's lexical features, as data: cheap cues shared by training and run time.

Most features are a regular expression (``pattern``); a few are computed (``compute``, a named function).
Their definitions are part of the classifier's recipe (:mod:`inference.classifier.recipe`), so editing a
pattern retrains the classifier at the next ``models prepare``; a computed feature's code is pinned by a
golden test instead, whose failure says to bump the recipe.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

_I = re.IGNORECASE


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    #: Shown in Classification.signals when the feature fires ("" = never shown).
    signal: str
    #: A regular expression: the feature is 1.0 when it matches anywhere, else 0.0.
    pattern: str = ""
    flags: int = _I
    #: A computed feature instead: (text, prompt tokens) -> value.
    compute: Callable[[str, int], float] | None = None
    _search: Callable[[str], object] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.compute is None) == (not self.pattern):
            raise ValueError(f"feature {self.name}: give exactly one of pattern and compute")
        if self.pattern:
            object.__setattr__(self, "_search", re.compile(self.pattern, self.flags).search)

    def value(self, text: str, n_tokens: int) -> float:
        if self.compute is not None:
            return self.compute(text, n_tokens)
        assert self._search is not None
        return 1.0 if self._search(text) else 0.0

    def definition(self) -> str:
        """What the recipe hashes: the pattern and flags, or the computing function's name."""
        how = f"{self.pattern}/{self.flags}" if self.pattern else f"compute:{self.compute.__name__}"  # type: ignore[union-attr]
        return f"{self.name}|{self.signal}|{how}"


_NUMBER = re.compile(r"(?<![\w.])\$?\d[\d,]*(?:\.\d+)?%?")
_WORD_PROBLEM = re.compile(
    r"\b(how (many|much|long|far|old)|what (is|was) the (total|probability|area|sum)|find (the|its|their)"
    r"|calculate|compute|how .* (left|remain)|solve)\b",
    _I,
)


def word_problem(text: str, _n: int) -> float:
    numbers = len(_NUMBER.findall(text))
    return 1.0 if numbers >= 2 and _WORD_PROBLEM.search(text) else 0.0


def numbers(text: str, _n: int) -> float:
    return min(len(_NUMBER.findall(text)), 8) / 8.0


def length(_text: str, n: int) -> float:
    return math.log1p(n) / math.log1p(2048)


def long_input(_text: str, n: int) -> float:
    return 1.0 if n > 300 else 0.0


FEATURES: tuple[Feature, ...] = (
    # --- task cues -----------------------------------------------------------------------------------
    Feature("code_fence", "code block", r"```|^ {4}\S", re.M),
    # Patterns avoid a leading \w+ (it backtracks at every position): these run on every request.
    Feature(
        "code_syntax",
        "code-like text",
        r"\bdef \w+\(|\bfunction\s*\w*\s*\(|=>|#include|\bSELECT\b.+\bFROM\b|\b(?:const|let|var) \w+ ="
        r"|;\s*$|\)\s*[:{]\s*$|^\s*(?:import|from) [\w.]+|</\w+>|\.\w+\(|\bprint\(",
        re.I | re.M,
    ),
    Feature(
        "error_trace",
        "error message",
        r"Traceback|[a-z]Error\b|Exception\b|\berror\[|npm ERR|[Ss]egfault|exit code|[Ss]tack ?trace",
        0,
    ),
    Feature(
        "prog_words",
        "",
        r"\b(python|javascript|js|typescript|java|rust|golang|c\+\+|sql|regex|css|html"
        r"|bash|git|docker|api endpoint|function|bug|compile|script|code)\b",
    ),
    Feature("structured_format", "structured output", r"\b(json|yaml|csv|xml|toml|schema|markdown table)\b"),
    Feature(
        "answer_only",
        "constrained answer",
        r"\b(only|just|solely|strictly|exactly)\b.{0,40}\b(yes|no|true|false|number|word|letter|emoji|format"
        r"|json|csv)\b|\bnothing else\b|\bno (other text|explanation|extra text|markdown)\b|\byes or no\b"
        r"|\byes/no\b|\btrue or false\b|\btrue/false\b|\bone of\b|\bin (this|the following) (exact )?format\b",
    ),
    Feature(
        "doc_ref",
        "refers to documents",
        r"\b(docs?|documentation|faq|wiki|handbook|knowledge ?base|my notes|the notes|pinned|readme|manual"
        r"|polic(y|ies)|guidelines|rules|context|passages?|cite|citations?|according to|pdf|per the|"
        r"changelog|patch notes|spec|syllabus|runbook|terms of service)\b",
    ),
    Feature(
        "live_data",
        "needs live data or a tool",
        r"\b(weather|forecast|temperature outside|stock price|price of \w+ (right now|today)|exchange rate|"
        r"remind me|reminder|timer|calendar|right now|rn|current (price|score|weather|time)|look (it )?up|"
        r"search (the web|online|google|for)|google (it|for)|ping|api|available functions|you have access to "
        r"the following (tools|functions)|call the function|tools?:|roll (a|\d)|flip a coin)\b",
    ),
    Feature(
        "agentic",
        "multi-step goal",
        r"\b(every (day|morning|evening|night|hour|week|monday|tuesday|wednesday|thursday|friday|saturday|"
        r"sunday)|whenever|monitor|keep (an eye|checking|watching|track)|automatically|autonomous(ly)?|on your"
        r" own|then|and (then )?(post|send|email|book|order|buy|open|schedule)|until|repeat)\b",
    ),
    Feature(
        "media_words",
        "mentions an image/audio/video",
        r"\b(image|photo|picture|pic|pics|screenshot|video|audio|clip|recording|voice (note|message)|draw|"
        r"selfie|footage|scan(ned)?|painting|drawing|logo|avatar|profile pic|song|listen|watch this)\b",
    ),
    Feature(
        "transform_words",
        "",
        r"\b(translate|translation|in (english|french|spanish|german)|summari[sz]e|summary|tl;?dr|rewrite|"
        r"rephrase|paraphrase|reword|convert|reformat|make (this|it)|turn (this|these|it|my))\b",
    ),
    Feature(
        "continue_words",
        "",
        r"\b(continue|keep (going|writing)|finish|complete|next (line|sentence|paragraph|verse)|"
        r"what (happens|comes) next|pick up|carry on|go on|autocomplete)\b",
    ),
    Feature(
        "label_words",
        "",
        r"\b(classify|classification|categori[sz]e|category|label|tag|sentiment|spam|toxic|is this (a|an)?|"
        r"positive or negative|which of these)\b",
    ),
    Feature("greeting", "", r"^\s*(hi|hey|hello|yo|sup|gm|gn|good (morning|night)|thanks?|ty)\b"),
    Feature("question_mark", "", r"\?\s*$"),
    # --- difficulty cues -----------------------------------------------------------------------------
    Feature("word_problem", "maths word problem", compute=word_problem),
    Feature("proof", "asks for a proof or derivation", r"\b(prove|proof|derive|derivation|show that)\b"),
    Feature(
        "long_output",
        "asks for long output",
        r"\b\d[\d,]{2,}[- ]?(\+ )?(word|page|line|row|key|url|product|item)s?\b|\b\d{2,}[- ](page|chapter|minute|hour)"
        r"|\bessay\b|\bin (depth|detail)\b|\bdetailed\b|\bcomprehensive\b|\bthorough(ly)?\b|\bfull (report|chapter|"
        r"act|solution|guide|summary)|\bchapters?\b|\bat least \d+|\bevery (one|single|field|clause|step)\b",
    ),
    Feature(
        "many_items",
        "many items to process",
        r"\b(\d{2,4}|dozens of|hundreds of|all( the)?)\s+(\w+\s+){0,2}(reviews|tickets|messages|comments|posts|rows|"
        r"items|documents|articles|questions|files|papers|transcripts|emails|records|applications|reports|entries)\b",
    ),
    Feature(
        "reasoning",
        "asks for step-by-step reasoning",
        r"\bstep[- ]by[- ]step\b|\bshow (your|the|ur) work\b|\bjustif(y|ication)\b|\bexplain (your|the) "
        r"reasoning\b|\breason(ing)? (through|carefully)\b|\bwalk me through\b|\banaly[sz]e\b",
    ),
    Feature("numbers", "", compute=numbers),
    Feature("length", "", compute=length),
    Feature("long_input", "long input", compute=long_input),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)

#: Characters of a long text that the regexes look at (head + tail): keeps a pasted novel cheap.
LEX_HEAD, LEX_TAIL = 4000, 1000
#: Characters of a long text that are read at all (head + tail): covers the encoder's token window and the
#: regexes' head and tail many times over, so only the cost changes (a 20 MB prompt costs what 8 KB does).
READ_HEAD, READ_TAIL = 6000, 2000


def read_window(text: str) -> tuple[str, float]:
    """The bounded part of ``text`` the classifier reads, and the factor from its length to the whole's."""
    if len(text) <= READ_HEAD + READ_TAIL:
        return text, 1.0
    sample = text[:READ_HEAD] + "\n" + text[-READ_TAIL:]
    return sample, len(text) / len(sample)


def lexical_features(text: str, n_tokens: int) -> tuple[np.ndarray, list[str]]:
    """Cheap hand-made features (shared by training and run time) and the signals that fired."""
    if len(text) > LEX_HEAD + LEX_TAIL:
        text = text[:LEX_HEAD] + "\n" + text[-LEX_TAIL:]
    values = np.empty(len(FEATURES), dtype=np.float32)
    signals: list[str] = []
    for i, feat in enumerate(FEATURES):
        v = feat.value(text, n_tokens)
        values[i] = v
        if v >= 1.0 and feat.signal:
            signals.append(feat.signal)
    return values, signals
