"""Can the tiny model learn word matching as text? Copy pretraining with a matching task mixed in.

    python research/match_probe.py train --model M --output O --words JSONL:FIELD ... [copy_pretrain flags]
    python research/match_probe.py answer-only MODEL OUTPUT STEPS [LR]
    python research/match_probe.py accuracy MODEL

``train`` runs :mod:`rankvideo.demo.copy_pretrain` with a fraction (``COPY_FRACTION``, default 0.5, stays
copying) of its texts replaced by ``"Query: q1 .. qm\\nVideo description: d1 .. dk\\nAnswer: yes|no"``:
the query is 1-5 words of the description, and for "no" one of them is replaced by a word the
description lacks (``MATCH_QUERY_MAX`` words at most, default 5). ``answer-only`` trains on
matching texts alone with the loss on the answer token only (lr 1e-3 unless given). ``accuracy``
scores 200 fresh texts (seed 123) by the model's next-token logits of " yes" against " no" after
"Answer:". Results in ``research/results/stage2_variants.md``.
"""

from __future__ import annotations

import os
import random
import sys

from rankvideo.demo import copy_pretrain

_copy_texts = copy_pretrain.repeated_texts


def mixed_texts(rng: random.Random, words: list[str], n: int) -> list[str]:
    texts = []
    for _ in range(n):
        if rng.random() < float(os.environ.get("COPY_FRACTION", "0.5")):
            texts += _copy_texts(rng, words, 1)
            continue
        description = [rng.choice(words) for _ in range(rng.randint(5, 14))]
        size = rng.randint(1, int(os.environ.get("MATCH_QUERY_MAX", "5")))
        query = rng.sample(description, min(len(description), size))
        yes = rng.random() < 0.5
        if not yes:
            query[rng.randrange(len(query))] = rng.choice([w for w in words if w not in description])
        parts = [f"Query: {' '.join(query)}", f"Video description: {' '.join(description)}"]
        if os.environ.get("MATCH_ORDER") == "description-first":
            parts.reverse()
        texts.append("\n".join(parts) + f"\nAnswer: {'yes' if yes else 'no'}")
    return texts


def accuracy(model_path: str, n: int = 200) -> float:
    import torch

    from rankvideo import models
    from rankvideo.data import formats

    model, processor = models.load_vlm(model_path, device="cpu", dtype="float32")
    tokenizer = processor.tokenizer
    words = formats.read_json(f"{model_path}/{copy_pretrain.RECORD}")["words"]
    yes, no = (tokenizer(f" {w}", add_special_tokens=False).input_ids[0] for w in ("yes", "no"))
    rng, right, total = random.Random(123), 0, 0
    os.environ["COPY_FRACTION"] = "0"
    model.eval()
    for text in mixed_texts(rng, words, n):
        prefix, answer = text.rsplit(" ", 1)
        with torch.no_grad():
            logits = model(input_ids=tokenizer(prefix, return_tensors="pt").input_ids).logits[0, -1]
        right += ("yes" if logits[yes] > logits[no] else "no") == answer
        total += 1
    return right / total


def train_answer_only(model_path: str, output: str, steps: int, batch_size: int = 16, lr: float = 1e-3,
                      seed: int = 42) -> None:
    """Matching texts only, the loss on the answer token alone (copy pretraining's loop otherwise)."""
    import torch

    from rankvideo import models
    from rankvideo.data import formats

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, processor = models.load_vlm(model_path, device="cpu", dtype="float32")
    tokenizer = processor.tokenizer
    words = formats.read_json(f"{model_path}/{copy_pretrain.RECORD}")["words"]
    os.environ["COPY_FRACTION"] = "0"
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        enc = tokenizer(mixed_texts(rng, words, batch_size), return_tensors="pt", padding=True, padding_side="left")
        labels = torch.full_like(enc.input_ids, -100)
        labels[:, -1] = enc.input_ids[:, -1]  # the answer word, last token of every (left-padded) text
        loss = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step + 1}: answer loss {float(loss):.4f}", flush=True)
    model.save_pretrained(output, safe_serialization=True)
    processor.save_pretrained(output)
    formats.write_json(f"{output}/{copy_pretrain.RECORD}", {**formats.read_json(f"{model_path}/{copy_pretrain.RECORD}"),
                                                           "answer_only_steps": steps})


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "accuracy":
        print(f"match accuracy {accuracy(rest[0]):.3f}")
        sys.exit(0)
    if command == "answer-only":  # MODEL OUTPUT STEPS
        train_answer_only(rest[0], rest[1], int(rest[2]), lr=float(rest[3]) if len(rest) > 3 else 1e-3)
        sys.exit(0)
    copy_pretrain.repeated_texts = mixed_texts
    sys.exit(copy_pretrain.main(rest))
