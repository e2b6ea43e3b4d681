"""Setup-time training of the task classifier (never run while the bot serves).

``prepare_classifier(cache_dir)`` builds ``cache_dir/classifier/<key>/`` where ``<key>`` hashes the
training data, the recipe and the build packages' versions (:mod:`inference.classifier.recipe`):

1. fine-tune the packaged all-MiniLM-L6-v2, cut to its first ``RECIPE.encoder_layers`` layers, on
   ``config/classifier/train.jsonl`` (task + difficulty heads, lower layers frozen) - a few minutes on
   2 CPU cores;
2. export it to ONNX (optimum, ``feature-extraction``, transformers library semantics) and quantize it
   to int8 with per-channel dynamic quantization;
3. fit the task (softmax) and difficulty (logistic) heads on the int8 model's embeddings plus the lexical
   features, so the heads see exactly what run time computes;
4. calibrate: the encoder is fine-tuned on a stratified ``1 - RECIPE.calibration_share`` of the rows only;
   a head fit on those rows gives logits for the others, which neither the encoder nor that head saw, and
   the task head's temperature is fit on them (logits of rows the encoder was tuned on are over-confident,
   so cross-validating the head alone sharpened where it should soften). The final heads are then fit on
   every row, and every row's embedding goes into the example bank of the unsure path
   (:mod:`inference.classifier.bank`).

Why fine-tuning and a 4-layer cut: logistic regression on the frozen MiniLM embeddings reached only
~0.87-0.90 held-out task accuracy; fine-tuning reached ~0.96, and a 4-layer model is as accurate while
costing 2/3 of the 6-layer latency. Numbers are in config/classifier/README.md.

``python -m inference.classifier.train`` prepares; ``python -m inference.classifier.evaluate`` prints held-out metrics.
This module may import torch/optimum/scikit-learn, but only inside the functions that train.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.classifier.features import FEATURE_NAMES, lexical_features
from inference.classifier.recipe import DATA_DIR, RECIPE, artifact_path
from inference.types import TASKS, Attachment, Request

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    task: str
    hard: bool
    attachments: tuple[Attachment, ...] = ()

    @property
    def request(self) -> Request:
        return Request(text=self.text, attachments=self.attachments)


def load_examples(path: Path) -> list[Example]:
    """Read a JSON Lines file of ``{"text", "task", "hard", "attachments"?}`` (see the README)."""
    out: list[Example] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row["task"] not in TASKS:
            raise ValueError(f"{path}:{lineno}: unknown task {row['task']!r}")
        atts = tuple(
            Attachment(a["filename"], a.get("content_type", ""), a.get("size")) for a in row.get("attachments", ())
        )
        out.append(Example(row["text"], row["task"], bool(row["hard"]), atts))
    return out


# --------------------------------------------------------------------------------------------- prepare


def prepare_classifier(cache_dir: Path, progress: Progress | None = None) -> Path:
    """Build the classifier artifacts for the current data/code into ``cache_dir`` (idempotent).

    Returns the artifact directory. A second call finds ``meta.json`` and returns at once. The build
    happens in a temporary sibling directory renamed into place, so a crash or a concurrent prepare
    never leaves a half-written directory under the final name.
    """
    target = artifact_path(Path(cache_dir))
    if (target / "meta.json").exists():
        return target
    say = progress or (lambda msg: log.info("%s", msg))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the final directory should read like any cache entry
    try:
        _build_artifacts(tmp, DATA_DIR / "train.jsonl", say, key=target.name)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "meta.json").exists():  # not just a concurrent prepare that won
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"classifier ready in {target}")
    return target


def _build_artifacts(out: Path, train_path: Path, say: Progress, *, key: str) -> None:
    from inference.artifacts import minilm_dir
    from inference.classifier.encoder import OnnxEncoder

    t_start = time.perf_counter()
    examples = load_examples(train_path)
    src = minilm_dir()
    shutil.copyfile(src / "tokenizer.json", out / "tokenizer.json")

    fit_idx, val_idx = _calibration_split(examples)
    say(f"fine-tuning the MiniLM task encoder on {len(fit_idx)} of {len(examples)} examples (a few minutes on 2 cores)")
    t0 = time.perf_counter()
    hf_dir = out / "hf"
    _fine_tune(src, out / "tokenizer.json", [examples[i] for i in fit_idx], hf_dir, say)
    t_finetune = time.perf_counter() - t0

    say("exporting the encoder to ONNX and quantizing it to int8")
    t0 = time.perf_counter()
    fp32 = _export_onnx(hf_dir, out / "onnx-fp32")
    _quantize(fp32, out / "encoder.onnx")
    cosine = _int8_agreement(fp32, out / "encoder.onnx", out / "tokenizer.json", [e.text for e in examples])
    shutil.rmtree(hf_dir)
    shutil.rmtree(out / "onnx-fp32")
    t_export = time.perf_counter() - t0

    say("fitting the task and difficulty heads")
    t0 = time.perf_counter()
    enc = OnnxEncoder(
        out / "encoder.onnx", out / "tokenizer.json", max_tokens=RECIPE.max_tokens, providers=["CPUExecutionProvider"]
    )
    emb, lex = _features(enc, [e.text for e in examples])
    heads, train_metrics = _fit_heads(emb, lex, examples)
    t0 = time.perf_counter()
    temperature, train_metrics["calibration"] = _calibrate(emb, lex, examples, fit_idx, val_idx)
    say(f"task head temperature {temperature:.3f} on {len(val_idx)} rows the encoder never saw")
    heads["task_temperature"] = np.asarray(temperature, dtype=np.float32)
    t_calibrate = time.perf_counter() - t0
    np.savez(out / "heads.npz", allow_pickle=False, **heads)
    from inference.classifier.bank import ExampleBank

    bank = ExampleBank(emb.shape[1])
    bank.add_many(emb, [e.task for e in examples], [e.hard for e in examples])  # type: ignore[misc]
    bank.save(out / "bank.npz")
    t_heads = time.perf_counter() - t0

    meta: dict[str, Any] = {
        "recipe_version": RECIPE.version,
        "key": key,
        "tasks": list(TASKS),
        "features": list(FEATURE_NAMES),
        "max_tokens": RECIPE.max_tokens,
        "encoder": {
            "base": "all-MiniLM-L6-v2 (packaged:minilm)",
            "layers": RECIPE.encoder_layers,
            "quantization": "int8 dynamic, per-channel",
            "int8_vs_fp32_cosine": cosine,
        },
        "train_examples": len(examples),
        "train_metrics": train_metrics,
        "unsure": {"below": RECIPE.unsure_below, "k": RECIPE.unsure_k, "weight": RECIPE.unsure_weight},
        "seconds": {
            "fine_tune": round(t_finetune, 1),
            "export": round(t_export, 1),
            "heads": round(t_heads, 1),
            "calibrate": round(t_calibrate, 1),
            "total": round(time.perf_counter() - t_start, 1),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # meta.json last: its presence is what load() and the idempotency check look for.
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def _fine_tune(src: Path, tokenizer_path: Path, examples: Sequence[Example], dest: Path, say: Progress) -> None:
    """Fine-tune the cut MiniLM with a task head and a difficulty head; save the encoder to ``dest``."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModel

    from inference.classifier.encoder import window_ids

    torch.manual_seed(RECIPE.seed)
    rng = random.Random(RECIPE.seed)
    tok = Tokenizer.from_file(str(tokenizer_path))
    tok.no_truncation()
    tok.no_padding()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    # Same ids as run time (inference.classifier.encoder.window_ids), so train and serve see identical inputs.
    seqs = [
        window_ids(tok.encode(e.text, add_special_tokens=False).ids, RECIPE.max_tokens, cls_id, sep_id)
        for e in examples
    ]

    model = AutoModel.from_pretrained(src, attn_implementation="eager")
    model.encoder.layer = model.encoder.layer[: RECIPE.encoder_layers]
    model.config.num_hidden_layers = RECIPE.encoder_layers
    layers = model.encoder.layer
    hidden = model.config.hidden_size
    for p in model.embeddings.parameters():
        p.requires_grad = False
    for layer in layers[: RECIPE.frozen_layers]:
        for p in layer.parameters():
            p.requires_grad = False

    def pad(batch: list[list[int]]) -> tuple[Any, Any]:
        width = max(len(s) for s in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros(len(batch), width)
        for i, s in enumerate(batch):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        return ids, mask

    def ext(mask: Any) -> Any:
        return (1.0 - mask[:, None, None, :]) * torch.finfo(torch.float32).min

    # Length-sorted batches: little padding, so most of the compute is real tokens.
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    batches = [order[i : i + RECIPE.batch_size] for i in range(0, len(order), RECIPE.batch_size)]

    # The frozen bottom is deterministic (eval mode): run it once and cache each example's states.
    model.eval()
    cached: list[Any] = [None] * len(seqs)
    with torch.no_grad():
        for idx in batches:
            ids, mask = pad([seqs[i] for i in idx])
            h = model.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
            for layer in layers[: RECIPE.frozen_layers]:
                h = layer(h, attention_mask=ext(mask))[0]
            for j, i in enumerate(idx):
                cached[i] = h[j, : len(seqs[i])].clone()

    def upper(idx: list[int]) -> Any:
        states = [cached[i] for i in idx]
        width = max(s.shape[0] for s in states)
        x = torch.zeros(len(states), width, hidden)
        mask = torch.zeros(len(states), width)
        for j, s in enumerate(states):
            x[j, : s.shape[0]] = s
            mask[j, : s.shape[0]] = 1
        for layer in layers[RECIPE.frozen_layers :]:
            x = layer(x, attention_mask=ext(mask))[0]
        m = mask.unsqueeze(-1)
        return (x * m).sum(1) / m.sum(1)  # mean pooling, as at run time

    task_head = torch.nn.Linear(hidden, len(TASKS))
    diff_head = torch.nn.Linear(hidden, 1)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": trainable, "lr": RECIPE.encoder_lr},
            {"params": [*task_head.parameters(), *diff_head.parameters()], "lr": RECIPE.head_lr},
        ],
        weight_decay=0.01,
    )
    steps = RECIPE.epochs * len(batches)
    warmup = max(1, int(0.1 * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (steps - s) / steps))
    y = torch.tensor([TASKS.index(e.task) for e in examples])  # type: ignore[arg-type]
    hard = torch.tensor([float(e.hard) for e in examples])
    for layer in layers[RECIPE.frozen_layers :]:
        layer.train()
    for epoch in range(RECIPE.epochs):
        rng.shuffle(batches)
        total = 0.0
        for idx in batches:
            pooled = upper(idx)
            t = torch.tensor(idx)
            loss = torch.nn.functional.cross_entropy(task_head(pooled), y[t], label_smoothing=0.05)
            loss = loss + 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(
                diff_head(pooled).squeeze(-1), hard[t]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        say(f"  epoch {epoch + 1}/{RECIPE.epochs}: loss {total / len(seqs):.3f}")
    model.eval()
    model.save_pretrained(dest)


def _export_onnx(hf_dir: Path, out_dir: Path) -> Path:
    from optimum.exporters.onnx import main_export

    from inference.artifacts import minilm_dir

    # The tokenizer files make the export directory a complete model directory for optimum.
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (minilm_dir() / name).exists():
            shutil.copyfile(minilm_dir() / name, hf_dir / name)
    # library_name="transformers": the plain BERT graph (last_hidden_state), not the
    # sentence-transformers one; we mean-pool in numpy.
    main_export(
        str(hf_dir),
        output=str(out_dir),
        task="feature-extraction",
        library_name="transformers",
        do_validation=False,
    )
    return out_dir / "model.onnx"


def _quantize(fp32: Path, int8: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel keeps cosine >= 0.99 with fp32; the per-tensor default loses more (guide).
    quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8)


def _int8_agreement(fp32: Path, int8: Path, tokenizer: Path, texts: Sequence[str]) -> dict[str, float]:
    from inference.classifier.encoder import OnnxEncoder

    cpu = ["CPUExecutionProvider"]
    a = OnnxEncoder(fp32, tokenizer, max_tokens=RECIPE.max_tokens, providers=cpu)
    b = OnnxEncoder(int8, tokenizer, max_tokens=RECIPE.max_tokens, providers=cpu)
    sample = list(texts)[:: max(1, len(texts) // 64)]
    cos = [float(a.embed(t)[0] @ b.embed(t)[0]) for t in sample]
    return {"mean": round(float(np.mean(cos)), 4), "min": round(float(np.min(cos)), 4), "n": len(cos)}


def _features(enc: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    emb, lex = [], []
    for text in texts:
        e, n = enc.embed(text)
        emb.append(e)
        lex.append(lexical_features(text, n)[0])
    return np.asarray(emb, dtype=np.float32), np.asarray(lex, dtype=np.float32)


def _fit_heads(emb: np.ndarray, lex: np.ndarray, examples: Sequence[Example]) -> tuple[dict[str, np.ndarray], dict]:
    from sklearn.linear_model import LogisticRegression

    mean = lex.mean(axis=0)
    scale = lex.std(axis=0) + 1e-3
    x = np.hstack([emb, (lex - mean) / scale])
    y = np.array([TASKS.index(e.task) for e in examples])  # type: ignore[arg-type]
    hard = np.array([e.hard for e in examples])
    task = LogisticRegression(C=RECIPE.task_c, max_iter=5000).fit(x, y)
    # Balanced: hard examples are a minority and a missed escalation costs more than a spurious one.
    diff = LogisticRegression(C=RECIPE.diff_c, max_iter=5000, class_weight="balanced").fit(x, hard)
    heads = {
        "feat_mean": mean.astype(np.float32),
        "feat_scale": scale.astype(np.float32),
        "task_w": task.coef_.astype(np.float32),
        "task_b": task.intercept_.astype(np.float32),
        "diff_w": diff.coef_[0].astype(np.float32),
        "diff_b": np.float32(diff.intercept_[0]),
    }
    metrics = {
        "task_accuracy": round(float(task.score(x, y)), 4),
        "hard_accuracy": round(float(diff.score(x, hard)), 4),
    }
    return heads, metrics


def _calibration_split(examples: Sequence[Example]) -> tuple[list[int], list[int]]:
    """(rows the encoder is tuned on, rows kept for the temperature): a stratified, seeded split."""
    rng = random.Random(RECIPE.seed + 1)
    by_task: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_task.setdefault(e.task, []).append(i)
    held: set[int] = set()
    for rows in by_task.values():
        rng.shuffle(rows)
        held.update(rows[: round(len(rows) * RECIPE.calibration_share)])
    return [i for i in range(len(examples)) if i not in held], sorted(held)


def _calibrate(
    emb: np.ndarray, lex: np.ndarray, examples: Sequence[Example], fit_idx: list[int], val_idx: list[int]
) -> tuple[float, dict[str, Any]]:
    """The task head's temperature, fit on rows neither the encoder nor this head saw, and what it and the
    unsure path do on those rows."""
    from sklearn.linear_model import LogisticRegression

    from inference.classifier.bank import ExampleBank
    from inference.classifier.calibration import expected_calibration_error, fit_temperature, softmax

    if not val_idx:
        return 1.0, {"rows": 0}
    mean, scale = lex[fit_idx].mean(axis=0), lex[fit_idx].std(axis=0) + 1e-3
    x = np.hstack([emb, (lex - mean) / scale])
    y = np.array([TASKS.index(e.task) for e in examples])  # type: ignore[arg-type]
    head = LogisticRegression(C=RECIPE.task_c, max_iter=5000).fit(x[fit_idx], y[fit_idx])
    logits, yv = head.decision_function(x[val_idx]), y[val_idx]
    temperature = fit_temperature(logits, yv)
    raw, probs = softmax(logits), softmax(logits, temperature)
    pred = probs.argmax(axis=1)
    # The unsure path on the same rows: a bank of the fitted rows votes for each unsure one.
    bank = ExampleBank(emb.shape[1])
    bank.add_many(emb[fit_idx], [examples[i].task for i in fit_idx], [examples[i].hard for i in fit_idx])  # type: ignore[misc]
    unsure = unsure_head = unsure_mixed = 0
    for row, i in enumerate(val_idx):
        if probs[row].max() >= RECIPE.unsure_below:
            continue
        votes = bank.nearest(emb[i], RECIPE.unsure_k)
        shares = np.array([votes.shares[t] for t in TASKS])
        mixed = (1 - RECIPE.unsure_weight) * probs[row] + RECIPE.unsure_weight * shares
        unsure += 1
        unsure_head += int(pred[row] == yv[row])
        unsure_mixed += int(mixed.argmax() == yv[row])
    return temperature, {
        "rows": len(val_idx),
        "temperature": round(temperature, 4),
        "task_accuracy": round(float((pred == yv).mean()), 4),
        "ece_before": round(expected_calibration_error(raw.max(axis=1), raw.argmax(axis=1) == yv), 4),
        "ece_after": round(expected_calibration_error(probs.max(axis=1), pred == yv), 4),
        "unsure_rows": unsure,
        "unsure_head_correct": unsure_head,
        "unsure_with_neighbours_correct": unsure_mixed,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.classifier.train", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="default: $SWITCHBOARD_CACHE_DIR or ~/.cache/switchboard"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from inference.artifacts import default_cache_dir

    t0 = time.perf_counter()
    path = prepare_classifier(
        args.cache_dir or default_cache_dir(), progress=lambda m: print(m, file=sys.stderr, flush=True)
    )
    print(f"prepared {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
