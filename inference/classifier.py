"""The local task classifier: which of the ten tasks a request is, and how hard it is.

Run-time path only: onnxruntime + tokenizers + numpy (no torch, transformers or scikit-learn), so a
cold start costs a fraction of a second. The artifacts (int8 MiniLM, tokenizer, linear heads) are made
at setup time by :func:`inference.train_classifier.prepare_classifier` (``python -m bot models prepare``).

Model: a MiniLM sentence embedding concatenated with a few cheap lexical features (code fences, "yes
or no", "according to the docs", numbers, length, ...). One softmax head gives the task, one logistic
head gives the difficulty. Both are plain ``W @ x + b`` in numpy.

Thread safety: a loaded :class:`TaskClassifier` holds no mutable state; ``classify`` may be called from
several threads at once.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.errors import ConfigError
from inference.types import TASKS, Attachment, Classification, Request, TaskId

log = logging.getLogger(__name__)

#: Part of the artifact key (with the training data and this package's classifier sources), so new
#: code retrains at the next ``models prepare`` instead of loading stale heads.
CODE_VERSION = "tc-2"
PREPARE_COMMAND = "python -m bot models prepare"
#: Prompt + history tokens beyond which the "long context" signal is added (routing.yaml's default).
LONG_CONTEXT_TOKENS = 1500

_I = re.IGNORECASE


@dataclass(frozen=True, slots=True)
class _Feature:
    name: str
    #: Shown in Classification.signals when the feature fires ("" = never shown).
    signal: str
    fn: Callable[[str, int], float]


def _rx(pattern: str, flags: int = _I) -> Callable[[str, int], float]:
    compiled = re.compile(pattern, flags)
    return lambda text, _n: 1.0 if compiled.search(text) else 0.0


_NUMBER = re.compile(r"(?<![\w.])\$?\d[\d,]*(?:\.\d+)?%?")
_WORD_PROBLEM = re.compile(
    r"\b(how (many|much|long|far|old)|what (is|was) the (total|probability|area|sum)|find (the|its|their)"
    r"|calculate|compute|how .* (left|remain)|solve)\b",
    _I,
)
_LONG_OUTPUT = re.compile(
    r"\b\d[\d,]{2,}[- ]?(\+ )?(word|page|line|row|key|url|product|item)s?\b|\b\d{2,}[- ](page|chapter|minute|hour)"
    r"|\bessay\b|\bin (depth|detail)\b|\bdetailed\b|\bcomprehensive\b|\bthorough(ly)?\b|\bfull (report|chapter|"
    r"act|solution|guide|summary)|\bchapters?\b|\bat least \d+|\bevery (one|single|field|clause|step)\b",
    _I,
)
_MANY_ITEMS = re.compile(
    r"\b(\d{2,4}|dozens of|hundreds of|all( the)?)\s+(\w+\s+){0,2}(reviews|tickets|messages|comments|posts|rows|"
    r"items|documents|articles|questions|files|papers|transcripts|emails|records|applications|reports|entries)\b",
    _I,
)


def _word_problem(text: str, _n: int) -> float:
    numbers = len(_NUMBER.findall(text))
    return 1.0 if numbers >= 2 and _WORD_PROBLEM.search(text) else 0.0


_FEATURES: tuple[_Feature, ...] = (
    # --- task cues -----------------------------------------------------------------------------------
    _Feature("code_fence", "code block", _rx(r"```|^ {4}\S", re.M)),
    # Patterns avoid a leading \w+ (it backtracks at every position): these run on every request.
    _Feature(
        "code_syntax",
        "code-like text",
        _rx(r"\bdef \w+\(|\bfunction\s*\w*\s*\(|=>|#include|\bSELECT\b.+\bFROM\b|\b(?:const|let|var) \w+ ="
            r"|;\s*$|\)\s*[:{]\s*$|^\s*(?:import|from) [\w.]+|</\w+>|\.\w+\(|\bprint\(",
            re.I | re.M),
    ),
    _Feature(
        "error_trace",
        "error message",
        _rx(r"Traceback|[a-z]Error\b|Exception\b|\berror\[|npm ERR|[Ss]egfault|exit code|[Ss]tack ?trace", 0),
    ),
    _Feature("prog_words", "", _rx(r"\b(python|javascript|js|typescript|java|rust|golang|c\+\+|sql|regex|css|html"
                                    r"|bash|git|docker|api endpoint|function|bug|compile|script|code)\b")),
    _Feature("structured_format", "structured output", _rx(r"\b(json|yaml|csv|xml|toml|schema|markdown table)\b")),
    _Feature(
        "answer_only",
        "constrained answer",
        _rx(r"\b(only|just|solely|strictly|exactly)\b.{0,40}\b(yes|no|true|false|number|word|letter|emoji|format"
            r"|json|csv)\b|\bnothing else\b|\bno (other text|explanation|extra text|markdown)\b|\byes or no\b"
            r"|\byes/no\b|\btrue or false\b|\btrue/false\b|\bone of\b|\bin (this|the following) (exact )?format\b"),
    ),
    _Feature(
        "doc_ref",
        "refers to documents",
        _rx(r"\b(docs?|documentation|faq|wiki|handbook|knowledge ?base|my notes|the notes|pinned|readme|manual"
            r"|polic(y|ies)|guidelines|rules|context|passages?|cite|citations?|according to|pdf|per the|"
            r"changelog|patch notes|spec|syllabus|runbook|terms of service)\b"),
    ),
    _Feature(
        "live_data",
        "needs live data or a tool",
        _rx(r"\b(weather|forecast|temperature outside|stock price|price of \w+ (right now|today)|exchange rate|"
            r"remind me|reminder|timer|calendar|right now|rn|current (price|score|weather|time)|look (it )?up|"
            r"search (the web|online|google|for)|google (it|for)|ping|api|available functions|you have access to "
            r"the following (tools|functions)|call the function|tools?:|roll (a|\d)|flip a coin)\b"),
    ),
    _Feature(
        "agentic",
        "multi-step goal",
        _rx(r"\b(every (day|morning|evening|night|hour|week|monday|tuesday|wednesday|thursday|friday|saturday|"
            r"sunday)|whenever|monitor|keep (an eye|checking|watching|track)|automatically|autonomous(ly)?|on your"
            r" own|then|and (then )?(post|send|email|book|order|buy|open|schedule)|until|repeat)\b"),
    ),
    _Feature(
        "media_words",
        "mentions an image/audio/video",
        _rx(r"\b(image|photo|picture|pic|pics|screenshot|video|audio|clip|recording|voice (note|message)|draw|"
            r"selfie|footage|scan(ned)?|painting|drawing|logo|avatar|profile pic|song|listen|watch this)\b"),
    ),
    _Feature(
        "transform_words",
        "",
        _rx(r"\b(translate|translation|in (english|french|spanish|german)|summari[sz]e|summary|tl;?dr|rewrite|"
            r"rephrase|paraphrase|reword|convert|reformat|make (this|it)|turn (this|these|it|my))\b"),
    ),
    _Feature(
        "continue_words",
        "",
        _rx(r"\b(continue|keep (going|writing)|finish|complete|next (line|sentence|paragraph|verse)|"
            r"what (happens|comes) next|pick up|carry on|go on|autocomplete)\b"),
    ),
    _Feature(
        "label_words",
        "",
        _rx(r"\b(classify|classification|categori[sz]e|category|label|tag|sentiment|spam|toxic|is this (a|an)?|"
            r"positive or negative|which of these)\b"),
    ),
    _Feature("greeting", "", _rx(r"^\s*(hi|hey|hello|yo|sup|gm|gn|good (morning|night)|thanks?|ty)\b")),
    _Feature("question_mark", "", _rx(r"\?\s*$")),
    # --- difficulty cues -----------------------------------------------------------------------------
    _Feature("word_problem", "maths word problem", _word_problem),
    _Feature("proof", "asks for a proof or derivation", _rx(r"\b(prove|proof|derive|derivation|show that)\b")),
    _Feature("long_output", "asks for long output", lambda t, _n: 1.0 if _LONG_OUTPUT.search(t) else 0.0),
    _Feature("many_items", "many items to process", lambda t, _n: 1.0 if _MANY_ITEMS.search(t) else 0.0),
    _Feature(
        "reasoning",
        "asks for step-by-step reasoning",
        _rx(r"\bstep[- ]by[- ]step\b|\bshow (your|the|ur) work\b|\bjustif(y|ication)\b|\bexplain (your|the) "
            r"reasoning\b|\breason(ing)? (through|carefully)\b|\bwalk me through\b|\banaly[sz]e\b"),
    ),
    _Feature("numbers", "", lambda t, _n: min(len(_NUMBER.findall(t)), 8) / 8.0),
    _Feature("length", "", lambda _t, n: math.log1p(n) / math.log1p(2048)),
    _Feature("long_input", "long input", lambda _t, n: 1.0 if n > 300 else 0.0),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in _FEATURES)


#: Characters of a long text that the regexes look at (head + tail): keeps a pasted novel cheap.
_LEX_HEAD, _LEX_TAIL = 4000, 1000
#: Characters of a long text that are read at all (head + tail): covers the encoder's token window and the
#: regexes' head and tail many times over, so only the cost changes (a 20 MB prompt costs what 8 KB does).
_READ_HEAD, _READ_TAIL = 6000, 2000


def read_window(text: str) -> tuple[str, float]:
    """The bounded part of ``text`` the classifier reads, and the factor from its length to the whole's."""
    if len(text) <= _READ_HEAD + _READ_TAIL:
        return text, 1.0
    sample = text[:_READ_HEAD] + "\n" + text[-_READ_TAIL:]
    return sample, len(text) / len(sample)


def lexical_features(text: str, n_tokens: int) -> tuple[np.ndarray, list[str]]:
    """Cheap hand-made features (shared by training and run time) and the signals that fired."""
    if len(text) > _LEX_HEAD + _LEX_TAIL:
        text = text[:_LEX_HEAD] + "\n" + text[-_LEX_TAIL:]
    values = np.empty(len(_FEATURES), dtype=np.float32)
    signals: list[str] = []
    for i, feat in enumerate(_FEATURES):
        v = feat.fn(text, n_tokens)
        values[i] = v
        if v >= 1.0 and feat.signal:
            signals.append(feat.signal)
    return values, signals


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def _sigmoid(z: float) -> float:
    # Stable for large |z| (math.exp overflows past ~709).
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _media_kind(att: Attachment) -> str:
    major = att.content_type.split("/", 1)[0].lower()
    if major in {"image", "audio", "video"}:
        return major
    ext = att.filename.rsplit(".", 1)[-1].lower()
    if ext in {"mp3", "wav", "ogg", "flac", "m4a", "opus", "aac"}:
        return "audio"
    if ext in {"mp4", "mov", "webm", "mkv", "avi"}:
        return "video"
    return "image"


class TaskClassifier:
    """Loaded classifier artifacts. Build with :meth:`load`."""

    def __init__(self, artifact_dir: Path, *, providers: list[str] | None = None) -> None:
        from inference.encoder import OnnxEncoder

        meta = json.loads((artifact_dir / "meta.json").read_text())
        if tuple(meta["tasks"]) != TASKS or tuple(meta["features"]) != FEATURE_NAMES:
            raise ConfigError(f"classifier artifacts in {artifact_dir} are stale: run `{PREPARE_COMMAND}`")
        heads = np.load(artifact_dir / "heads.npz")
        self.artifact_dir = artifact_dir
        self.meta = meta
        self._feat_mean = heads["feat_mean"].astype(np.float32)
        self._feat_scale = heads["feat_scale"].astype(np.float32)
        self._task_w = heads["task_w"].astype(np.float32)  # (n_tasks, dim)
        self._task_b = heads["task_b"].astype(np.float32)
        self._diff_w = heads["diff_w"].astype(np.float32)  # (dim,)
        self._diff_b = float(heads["diff_b"])
        self.encoder = OnnxEncoder(
            artifact_dir / "encoder.onnx",
            artifact_dir / "tokenizer.json",
            max_tokens=int(meta["max_tokens"]),
            # 2 spinning threads meet the 2 ms median on a 2-core box (1.6 ms vs 2.3 ms with one, measured
            # with bench/routing.py); SWITCHBOARD_CLASSIFIER_THREADS=1 suits a box the generator saturates.
            threads=int(os.environ.get("SWITCHBOARD_CLASSIFIER_THREADS") or min(2, os.cpu_count() or 1)),
            providers=providers,
        )
        self.provider = self.encoder.provider

    @classmethod
    def load(cls, cache_dir: Path | None = None, *, providers: list[str] | None = None) -> TaskClassifier:
        """Load the artifacts for the current training data and code version from ``cache_dir``."""
        from inference.sources import default_cache_dir

        cache_dir = cache_dir or default_cache_dir()
        artifact_dir = artifact_path(cache_dir)
        if not (artifact_dir / "meta.json").exists():
            raise ConfigError(
                f"task classifier not prepared (no {artifact_dir}): run `{PREPARE_COMMAND}` first"
            )
        t0 = time.perf_counter()
        clf = cls(artifact_dir, providers=providers)
        log.info("task classifier loaded in %.0f ms from %s", (time.perf_counter() - t0) * 1e3, artifact_dir)
        return clf

    def features(self, text: str) -> tuple[np.ndarray, int, list[str]]:
        """(head input vector, prompt tokens, lexical signals) for ``text``.

        Only a bounded head and tail of a long text are read (tokenising 20 MB took 52 s and 6 GB); its
        token count, which the length features and the long-context rule use, is scaled up from them.
        """
        sample, scale = read_window(text)
        ids = self.encoder.token_ids(sample)
        n_tokens = len(ids) if scale == 1.0 else round(len(ids) * scale)
        emb = self.encoder.embed_ids(ids)
        lex, signals = lexical_features(sample, n_tokens)
        lex = (lex - self._feat_mean) / self._feat_scale
        return np.concatenate([emb.astype(np.float32), lex]), n_tokens, signals

    def classify(self, request: Request) -> Classification:
        x, n_tokens, signals = self.features(request.text)
        probs = _softmax(self._task_w @ x + self._task_b)
        scores: dict[str, float] = {t: float(p) for t, p in zip(TASKS, probs, strict=True)}
        best = int(probs.argmax())
        task: TaskId = TASKS[best]
        confidence = float(probs[best])
        difficulty = _sigmoid(float(self._diff_w @ x) + self._diff_b)

        total = n_tokens + max(request.context_tokens, 0)
        if total > LONG_CONTEXT_TOKENS:
            # Only a signal: the router owns the long-context rule (its threshold is configurable).
            signals.append(f"long context ({total} tokens)")

        media = [a for a in request.attachments if a.is_media]
        if media:
            # A media attachment is multimodal by definition: the small tier cannot see it.
            kinds = sorted({_media_kind(a) for a in media})
            signals = [f"{k} attachment" for k in kinds] + signals
            task, confidence = "multimodal", 1.0
            scores = {t: (1.0 if t == "multimodal" else 0.0) for t in TASKS}
        elif request.attachments:
            signals.append("non-media attachment")
        return Classification(
            task=task,
            confidence=confidence,
            difficulty=difficulty,
            signals=tuple(dict.fromkeys(signals)),
            scores=scores,
            prompt_tokens=n_tokens,
        )


def data_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "config" / "classifier"


#: Source files whose content shapes the artifacts (features, window, training recipe).
_KEYED_SOURCES = ("classifier.py", "encoder.py", "train_classifier.py")


def artifact_key(train_path: Path | None = None) -> str:
    """Hash of the training data, the code version and the classifier's source: names the artifacts.

    Hashing the source as well as CODE_VERSION means an edited feature or hyper-parameter can never be
    served with heads trained by the old code; the cost is a retrain (under a minute on idle cores)
    after any edit of those files, comments included.
    """
    import hashlib

    h = hashlib.sha256(CODE_VERSION.encode())
    h.update(b"\0")
    h.update((train_path or data_dir() / "train.jsonl").read_bytes())
    h.update(b"\0")
    h.update(_sources_fingerprint().encode())
    return h.hexdigest()[:16]


@functools.cache
def _sources_fingerprint() -> str:
    # Raw bytes (about 0.1 ms; parsing to an AST would ignore comments but cost ~15 ms of cold start).
    import hashlib

    h = hashlib.sha256()
    for name in _KEYED_SOURCES:
        h.update(Path(__file__).with_name(name).read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def artifact_path(cache_dir: Path) -> Path:
    return cache_dir / "classifier" / artifact_key()
