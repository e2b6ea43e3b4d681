"""Held-out evaluation of the task classifier: task accuracy, tier agreement, per-task recall and confusions,
expected calibration error (15 bins) and how often the unsure path decided.

``python -m inference.classifier.evaluate`` prepares the classifier if needed, then scores
``config/classifier/heldout.jsonl`` (or ``--heldout FILE``). Tier agreement follows the routing policy in
``config/routing.yaml`` (which tasks are small, the escalation threshold): nothing here copies it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.catalogue import RoutingPolicy, load_routing
from inference.classifier.calibration import expected_calibration_error
from inference.classifier.model import TaskClassifier
from inference.classifier.recipe import DATA_DIR
from inference.classifier.train import Example, load_examples, prepare_classifier
from inference.types import TASKS, Tier


def expected_tier(task: str, hard: bool, policy: RoutingPolicy) -> str:
    """The tier a labelled example should get: its task's tier, or large when a small task is hard."""
    return "small" if policy.tiers[task] is Tier.SMALL and not hard else "large"  # type: ignore[index]


def evaluate(clf: TaskClassifier, examples: Sequence[Example], policy: RoutingPolicy | None = None) -> dict[str, Any]:
    """Task accuracy, tier agreement (small tasks escalate at the policy's threshold) and confusions."""
    policy = policy or load_routing()
    threshold = policy.escalation.threshold
    confusion: Counter[tuple[str, str]] = Counter()
    correct = tier_ok = hard_ok = 0
    per_task: dict[str, Counter[str]] = {t: Counter() for t in TASKS}
    confidences: list[float] = []
    hits: list[bool] = []
    unsure = Counter[str]()
    for ex in examples:
        c = clf.classify(ex.request)
        predicted_large = policy.tiers[c.task] is not Tier.SMALL or c.difficulty >= threshold
        if not any(a.is_media for a in ex.request.attachments):  # an attachment's 100% is a rule, not a guess
            confidences.append(c.confidence)
            hits.append(c.task == ex.task)
        if c.decided_by == "nearest examples":
            unsure["n"] += 1
            unsure["hit"] += c.task == ex.task
        correct += c.task == ex.task
        tier_ok += ("large" if predicted_large else "small") == expected_tier(ex.task, ex.hard, policy)
        hard_ok += (c.difficulty >= threshold) == ex.hard
        per_task[ex.task]["n"] += 1
        per_task[ex.task]["to_large"] += predicted_large
        per_task[ex.task]["expect_large"] += expected_tier(ex.task, ex.hard, policy) == "large"
        per_task[ex.task]["hit"] += c.task == ex.task
        per_task[c.task]["predicted"] += 1
        if c.task != ex.task:
            confusion[(ex.task, c.task)] += 1
    n = len(examples)
    return {
        "n": n,
        "task_accuracy": correct / n,
        "tier_agreement": tier_ok / n,
        "hard_accuracy": hard_ok / n,
        "per_task": {
            t: {
                "n": c["n"],
                "recall": c["hit"] / c["n"] if c["n"] else 0.0,
                "precision": c["hit"] / c["predicted"] if c["predicted"] else 0.0,
                # By the true task: how many went to the large tier, and how many should have.
                "to_large": c["to_large"],
                "expect_large": c["expect_large"],
            }
            for t, c in per_task.items()
        },
        "confusions": confusion.most_common(),
        "ece": expected_calibration_error(confidences, hits, bins=15),
        "unsure": {"n": unsure["n"], "correct": unsure["hit"]},
        "threshold": threshold,
        "large_tasks": [t for t in TASKS if policy.tiers[t] is not Tier.SMALL],
    }


def _print_report(res: dict[str, Any], clf: TaskClassifier) -> None:
    n = res["n"]
    print(f"held-out examples: {n}  (artifacts {clf.artifact_dir}, encoder on {clf.provider})")
    print(f"task accuracy:   {res['task_accuracy']:.3f}  ({round(res['task_accuracy'] * n)}/{n})")
    print(
        f"tier agreement:  {res['tier_agreement']:.3f}  ({round(res['tier_agreement'] * n)}/{n})"
        f"  [large for {'/'.join(res['large_tasks'])}; small tasks escalate at difficulty >= "
        f"{res['threshold']}]"
    )
    print(f"hard detection:  {res['hard_accuracy']:.3f}")
    print(f"calibration:     ECE {res['ece']:.3f} (15 bins, temperature {clf.temperature:.2f})")
    u = res["unsure"]
    print(f"unsure path:     decided {u['n']} of {n} (under {clf.unsure_below:.0%} confidence), {u['correct']} right")
    print(f"\n{'task':<16}{'n':>4}{'recall':>9}{'precision':>11}")
    for t, m in res["per_task"].items():
        print(f"{t:<16}{m['n']:>4}{m['recall']:>9.3f}{m['precision']:>11.3f}")
    print("\nconfusions (true -> predicted: count):")
    for (true, pred), k in res["confusions"] or [(("none", "none"), 0)]:
        print(f"  {true} -> {pred}: {k}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.classifier.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="default: $SWITCHBOARD_CACHE_DIR or ~/.cache/switchboard"
    )
    parser.add_argument(
        "--heldout", type=Path, default=None, help="JSON Lines file to evaluate (default: heldout.jsonl)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    from inference.artifacts import default_cache_dir

    cache = args.cache_dir or default_cache_dir()
    t0 = time.perf_counter()
    path = prepare_classifier(cache, progress=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"prepared {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    clf = TaskClassifier.load(cache)
    res = evaluate(clf, load_examples(args.heldout or DATA_DIR / "heldout.jsonl"))
    _print_report(res, clf)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
