"""Routing-decision latency: warm, batch 1, over the held-out request texts.

Prints a table (median / p90 / p99 / max in ms) for the classifier alone and for the full routing
decision (classifier + policy), the latter also split by path: the common fast path (the classifier decides)
and the unsure path (nearest labelled examples give a second opinion), plus cold import+load time and
resident memory. No assertions: the
numbers depend on the machine and on what else runs on it.

    python bench/routing.py [--n 1000] [--cache-dir DIR] [--threads 1] [--readme]
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()  # before any heavy import: cold start includes onnxruntime's import

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._readme import write_section  # noqa: E402
from inference.classifier import TaskClassifier  # noqa: E402
from inference.classifier.recipe import DATA_DIR  # noqa: E402
from inference.types import Attachment, Request  # noqa: E402


def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def _requests() -> list[Request]:
    out = []
    for line in (DATA_DIR / "heldout.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            atts = tuple(Attachment(a["filename"], a.get("content_type", "")) for a in row.get("attachments", ()))
            out.append(Request(text=row["text"], attachments=atts))
    return out


def _split(times: list[float], paths: list[str], path: str) -> list[float]:
    """The calls of ``times`` (request i % len(paths)) whose request takes ``path``."""
    return [t for i, t in enumerate(times) if paths[i % len(paths)] == path]


def _time(fn, reqs: list[Request], n: int, warmup: int) -> list[float]:  # type: ignore[no-untyped-def]
    for i in range(warmup):
        fn(reqs[i % len(reqs)])
    times = []
    for i in range(n):
        r = reqs[i % len(reqs)]
        t0 = time.perf_counter()
        fn(r)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="timed decisions (>= 500)")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: the artifact's, 1)")
    ap.add_argument("--readme", action="store_true", help="also write the table into README.md")
    args = ap.parse_args()
    if args.threads:
        os.environ["SWITCHBOARD_CLASSIFIER_THREADS"] = str(args.threads)

    t0 = time.perf_counter()
    clf = TaskClassifier.load(args.cache_dir)
    t_load = time.perf_counter() - t0
    cold = time.perf_counter() - _T_START
    rss_loaded = _rss_mb()

    reqs = _requests()
    router = None
    try:  # the full decision when the catalogue/policy load; the classifier alone otherwise
        from inference.catalogue import load_catalogue, load_routing
        from inference.router import Router

        catalogue = load_catalogue()
        router = Router(clf, load_routing(catalogue=catalogue), catalogue)
    except Exception as exc:
        print(f"(router unavailable, timing the classifier only: {exc})")

    rows = [("classify", _time(clf.classify, reqs, args.n, args.warmup))]
    paths = [clf.classify(r).decided_by for r in reqs]
    if router is not None:
        routed = _time(router.route, reqs, args.n, args.warmup)
        rows.append(("route (classify+policy)", routed))
        for path, label in (("classifier", "  fast path"), ("nearest examples", "  unsure path")):
            if _split(routed, paths, path):
                rows.append((label, _split(routed, paths, path)))
    tokens = [clf.classify(r).prompt_tokens for r in reqs]

    print(
        f"routing bench: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, encoder on {clf.provider}, {clf.meta['encoder']['layers']}-layer int8 "
        f"MiniLM, window {clf.meta['max_tokens']} tokens, {clf.encoder.threads} ORT thread(s)"
    )
    print(
        f"requests: {len(reqs)} held-out texts (tokens median {statistics.median(tokens):.0f}, max {max(tokens)}), "
        f"batch 1, warm ({args.warmup} warm-up calls), {args.n} timed decisions each"
    )
    print()
    print(f"{'':<26}{'median ms':>10}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}{'mean ms':>9}")
    for name, ts in rows:
        print(
            f"{name:<26}{statistics.median(ts):>10.2f}{_pct(ts, 90):>9.2f}{_pct(ts, 99):>9.2f}"
            f"{max(ts):>9.2f}{statistics.fmean(ts):>9.2f}"
        )
    print()
    print(f"cold start (imports + load): {cold * 1e3:.0f} ms   (TaskClassifier.load alone: {t_load * 1e3:.0f} ms)")
    print(f"RSS after load: {rss_loaded:.0f} MB   after bench: {_rss_mb():.0f} MB")
    heavy = [m for m in ("torch", "transformers", "sklearn", "optimum") if m in sys.modules]
    if args.readme:
        lines = ["| | median | p90 | p99 |", "|---|---:|---:|---:|"]
        lines += [
            f"| {name.strip()} | {statistics.median(ts):.2f} ms | {_pct(ts, 90):.2f} ms | {_pct(ts, 99):.2f} ms |"
            for name, ts in rows
        ]
        lines.append(
            f"\nCold start {cold:.1f} s, {rss_loaded:.0f} MB RSS after load; {clf.encoder.threads} ONNX Runtime "
            f"thread(s); {args.n} warm decisions over the held-out texts, batch 1; the unsure path (nearest labelled "
            f"examples, under {clf.unsure_below:.0%} confidence) took {paths.count('nearest examples')} of "
            f"{len(paths)} texts."
        )
        write_section("routing", "\n".join(lines))
    print(f"load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"heavy modules imported on the run-time path: {', '.join(heavy) if heavy else 'none'}")


if __name__ == "__main__":
    main()
