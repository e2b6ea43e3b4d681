"""Task-classifier quality on a labelled set it was not trained on: accuracy, tier agreement, per-task recall.

    python bench/classifier.py [--heldout FILE] [--cache-dir DIR] [--readme]

Tier agreement follows config/routing.yaml (which tasks are small, the escalation threshold).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._readme import write_section
from inference.classifier import TaskClassifier
from inference.classifier.evaluate import evaluate
from inference.classifier.recipe import DATA_DIR
from inference.classifier.train import load_examples, prepare_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heldout", type=Path, default=DATA_DIR / "heldout.jsonl")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--readme", action="store_true", help="also write the table into README.md")
    args = ap.parse_args()

    from inference.artifacts import default_cache_dir

    cache = args.cache_dir or default_cache_dir()
    prepare_classifier(cache)
    res = evaluate(TaskClassifier.load(cache), load_examples(args.heldout))
    n = res["n"]
    lines = [
        f"{args.heldout.name}: **task accuracy {res['task_accuracy']:.1%}** ({round(res['task_accuracy'] * n)}/{n}), "
        f"**tier agreement {res['tier_agreement']:.1%}** ({round(res['tier_agreement'] * n)}/{n}), "
        f"hard detection {res['hard_accuracy']:.1%}.",
        "",
        "| task | n | recall | precision |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| {task} | {m['n']} | {m['recall']:.2f} | {m['precision']:.2f} |" for task, m in res["per_task"].items()
    ]
    table = "\n".join(lines)
    print(table)
    if args.readme:
        write_section("classifier", table)


if __name__ == "__main__":
    main()
