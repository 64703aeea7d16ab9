"""Copy pretraining: give a model trained from nothing the copying a pretrained language model has.

    python -m rankvideo.demo.copy_pretrain --model results/models/stage1 --output results/models/stage1-copy \\
        --words results/training_data/stage1_train.jsonl:caption results/training_data/train.jsonl:query \\
        [--steps 1000] [--batch-size 16] [--lr 1e-3] [--seed 42] [--device cpu]

Only for the tiny models of the embedded default (``copy_pretrain.steps: 0``, off, for a real
Qwen3-VL). A model trained from nothing has never seen text that repeats itself, so it has no
attention heads that find an earlier occurrence of the current token (induction heads), which
matching a query's words against a description's words needs: stage 2 trained from the plain
stage-1 model stays below BM25 even with the benchmark's reference caption in its prompt. This
trains the whole model, text only, with the causal-LM loss on sequences ``"w1 ... wk\\nw1 ... wk"``
of k (5 to 14) words drawn from the words of the training data (stage-1 captions, training
queries): the first half cannot be predicted, the second can once the model copies. On the default
stage-1 model the loss falls from 7.3 to ~2.5 in 100 steps (word frequencies), then from about
step 500 steeply to ~1.2 (the second half copied); the numbers are in research/demo_findings.md and
``research/results/stage2_variants.md``.

The output folder (weights and processor, written under a temporary name and renamed when whole)
loads like any model folder; ``copy_pretrain.json`` in it records the settings, the words and the
loss per step.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from typing import Sequence

from rankvideo import logs, models
from rankvideo.data import formats

log = logging.getLogger(__name__)

RECORD = "copy_pretrain.json"


def vocabulary(sources: Sequence[tuple[str, str]]) -> list[str]:
    """The distinct words (lower case, edge punctuation removed, sorted) of the ``field`` of every
    record of each ``(jsonl, field)`` source."""
    words: set[str] = set()
    for path, field in sources:
        for record in formats.read_jsonl(path, required=(field,)):
            words |= {word.strip(".,;:!?\"'()").lower() for word in str(record[field]).split()}
    words.discard("")
    if not words:
        raise ValueError(f"no words in {', '.join(f'{p} ({f})' for p, f in sources)} to copy-pretrain on")
    return sorted(words)


def repeated_texts(rng: random.Random, words: list[str], n: int) -> list[str]:
    """``n`` texts, each a sequence of 5 to 14 random words, a newline, and the same sequence again."""
    texts = []
    for _ in range(n):
        seq = " ".join(rng.choice(words) for _ in range(rng.randint(5, 14)))
        texts.append(f"{seq}\n{seq}")
    return texts


def copy_pretrain(model_path: str, output, words: list[str], steps: int, batch_size: int, lr: float, seed: int,
                  device: str | None = None, options: models.LoadOptions = models.LoadOptions(),
                  progress: bool = True) -> list[float]:
    """Train ``model_path`` (all weights, fp32, AdamW with weight decay 0.01, gradients clipped at 1)
    on repeated sequences of ``words``; save it to ``output``; returns the loss per step."""
    import torch

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, processor = models.load_vlm(model_path, options, device=device, dtype="float32")
    device = str(model.device)
    tokenizer = processor.tokenizer
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses: list[float] = []
    bar = logs.progress(range(steps), desc="copy pretraining", unit="step", enabled=progress, logger=log)
    for step in bar:
        enc = tokenizer(repeated_texts(rng, words, batch_size), return_tensors="pt", padding=True,
                        padding_side="right").to(device)
        labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
        loss = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            log.info("step %d: loss %.4f", step + 1, losses[-1])
    with formats.atomic_dir(output) as partial:
        model.save_pretrained(partial, safe_serialization=True)
        processor.save_pretrained(partial)
        formats.write_json(partial / RECORD, {"model": str(model_path), "steps": steps, "batch_size": batch_size,
                                              "lr": lr, "seed": seed, "words": words,
                                              "loss": [round(x, 4) for x in losses]})
    return losses


def source(text: str) -> tuple[str, str]:
    """``PATH:FIELD`` → (path, field)."""
    path, sep, field = text.rpartition(":")
    if not sep or not path or not field:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PATH:FIELD, e.g. train.jsonl:query")
    return path, field


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rankvideo.demo.copy_pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the model folder to train (e.g. results/models/stage1)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--words", required=True, nargs="+", type=source, metavar="JSONL:FIELD",
                        help="where the words come from: a JSONL file and the field of its records")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", help="default: cuda when there is one, else cpu")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logs.setup()
    try:
        words = vocabulary(args.words)
    except (formats.FormatError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    losses = copy_pretrain(args.model, args.output, words, args.steps, args.batch_size, args.lr, args.seed,
                           args.device, progress=not args.no_progress)
    tail = losses[-100:]
    print(f"{len(words)} words; loss: first step {losses[0]:.3f}, mean of the last {len(tail)} "
          f"{sum(tail) / len(tail):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
