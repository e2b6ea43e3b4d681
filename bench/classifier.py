"""Task-classifier quality on labelled sets it was not trained on, and the cost of its two paths.

    python bench/classifier.py [--set FILE ...] [--cache-dir DIR] [--rounds N] [--readme]

Sets: the same-author held-out split (config/classifier/heldout.jsonl) and, when it exists, the independent set
bench/data/router_independent.jsonl (written apart from the training data; never trained or tuned on). For each:
task accuracy per task, tier agreement, expected calibration error (15 bins), how often the unsure path decided,
and the escalation rate on a realistic mix of tasks (MIX below: the set's rows reweighted per task). Latency:
the fast path (the classifier decides) and the unsure path (nearest examples decide) timed separately, warm,
batch 1, over the held-out texts. Tier agreement follows config/routing.yaml.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._readme import write_section
from inference.catalogue import load_routing
from inference.classifier import TaskClassifier
from inference.classifier.evaluate import evaluate
from inference.classifier.recipe import DATA_DIR
from inference.classifier.train import Example, load_examples, prepare_classifier
from inference.types import TASKS, Tier

INDEPENDENT = Path(__file__).resolve().parent / "data" / "router_independent.jsonl"

#: An assumed share of each task in a Discord server's traffic (mostly chat and code, few agents), used to
#: reweight a set's rows so the escalation rate reads like a day of requests rather than a balanced set.
MIX: dict[str, float] = {
    "chat": 0.35,
    "code": 0.15,
    "conversion": 0.10,
    "rag": 0.08,
    "tool_use": 0.08,
    "classification": 0.05,
    "completion": 0.05,
    "grammar": 0.06,
    "multimodal": 0.05,
    "agent": 0.03,
}


def _mix(res: dict[str, Any]) -> dict[str, float]:
    """Escalation figures over MIX: small-task requests sent to the large tier, predicted and by the labels."""
    small = {t for t, tier in load_routing().tiers.items() if tier is Tier.SMALL}
    pt = res["per_task"]
    weight = {t: MIX[t] for t in TASKS if pt[t]["n"]}
    total = sum(weight[t] for t in weight if t in small) or 1.0

    def rate(key: str) -> float:
        return sum(weight[t] * pt[t][key] / pt[t]["n"] for t in weight if t in small) / total

    all_w = sum(weight.values()) or 1.0
    return {
        "escalated": rate("to_large"),
        "escalated_expected": rate("expect_large"),
        "large_share": sum(weight[t] * pt[t]["to_large"] / pt[t]["n"] for t in weight) / all_w,
        "large_share_expected": sum(weight[t] * pt[t]["expect_large"] / pt[t]["n"] for t in weight) / all_w,
    }


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def _latency(clf: TaskClassifier, examples: list[Example], rounds: int) -> dict[str, list[float]]:
    """Milliseconds per classify() call, by what decided; plus the bank lookup alone."""
    for ex in examples[:50]:  # warm-up
        clf.classify(ex.request)
    times: dict[str, list[float]] = {"classifier": [], "nearest examples": [], "bank lookup": []}
    for _ in range(rounds):
        for ex in examples:
            if any(a.is_media for a in ex.request.attachments):
                continue
            t0 = time.perf_counter()
            c = clf.classify(ex.request)
            times.setdefault(c.decided_by, []).append((time.perf_counter() - t0) * 1e3)
            if clf.bank is not None and c.embedding is not None:
                t0 = time.perf_counter()
                clf.bank.nearest(c.embedding, clf.unsure_k)
                times["bank lookup"].append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", type=Path, action="append", default=None, help="labelled JSON Lines (repeatable)")
    ap.add_argument("--heldout", type=Path, default=None, help=argparse.SUPPRESS)  # the old name of --set
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=2, help="timed passes over the held-out texts")
    ap.add_argument("--readme", action="store_true", help="also write the tables into README.md")
    args = ap.parse_args()
    sets = args.set or ([args.heldout] if args.heldout else None)
    if sets is None:
        sets = [DATA_DIR / "heldout.jsonl"] + ([INDEPENDENT] if INDEPENDENT.exists() else [])

    from inference.artifacts import default_cache_dir

    cache = args.cache_dir or default_cache_dir()
    prepare_classifier(cache)
    clf = TaskClassifier.load(cache)
    results = [(path, evaluate(clf, load_examples(path))) for path in sets]
    # The same sets with the unsure path switched off: what the nearest examples add.
    bank, clf.bank = clf.bank, None
    head_only = [evaluate(clf, load_examples(path))["task_accuracy"] for path in sets]
    clf.bank = bank

    lines = [
        "| set | n | task accuracy | without the unsure path | tier agreement | ECE | unsure path decided (right) "
        "| escalated small tasks (labels) | large-tier share (labels) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (path, res), alone in zip(results, head_only, strict=True):
        n, m, u = res["n"], _mix(res), res["unsure"]
        lines.append(
            f"| {path.name} | {n} | **{res['task_accuracy']:.1%}** | {alone:.1%} | {res['tier_agreement']:.1%} "
            f"| {res['ece']:.3f} "
            f"| {u['n']} ({u['correct']}) | {m['escalated']:.1%} ({m['escalated_expected']:.1%}) "
            f"| {m['large_share']:.1%} ({m['large_share_expected']:.1%}) |"
        )
    lines += ["", "Recall per task (precision in brackets):", ""]
    lines.append("| task | " + " | ".join(f"{p.name} (n)" for p, _ in results) + " |")
    lines.append("|---|" + "---:|" * len(results))
    for task in TASKS:
        cells = []
        for _, res in results:
            m = res["per_task"][task]
            cells.append(f"{m['recall']:.2f} ({m['precision']:.2f}), {m['n']}" if m["n"] else "-")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")

    times = _latency(clf, load_examples(DATA_DIR / "heldout.jsonl"), args.rounds)
    lines += ["", "| path | calls | median | p90 | p99 |", "|---|---:|---:|---:|---:|"]
    names = {
        "classifier": "fast path (the classifier decides)",
        "nearest examples": "unsure path (nearest examples decide)",
        "bank lookup": "of which the bank lookup",
    }
    for key, label in names.items():
        ts = times.get(key) or []
        if ts:
            lines.append(
                f"| {label} | {len(ts)} | {statistics.median(ts):.2f} ms | {_pct(ts, 90):.2f} ms "
                f"| {_pct(ts, 99):.2f} ms |"
            )
    bank_rows = len(clf.bank) if clf.bank is not None else 0
    lines += [
        "",
        f"Temperature {clf.temperature:.2f} (fit on the 20% of training rows the encoder was not tuned on); the "
        "unsure path runs under "
        f"{clf.unsure_below:.0%} calibrated confidence and mixes in the vote of the {clf.unsure_k} nearest of "
        f"{bank_rows} labelled examples. ECE over 15 bins (media attachments left out: their 100% is a rule). The mix "
        "weights are an assumption: " + ", ".join(f"{t} {w:.0%}" for t, w in MIX.items()) + ".",
    ]
    table = "\n".join(lines)
    print(table)
    if args.readme:
        write_section("classifier", table)


if __name__ == "__main__":
    main()
