"""Stage 1: perception-grounded caption SFT with transformers' Trainer.

    python -m rankvideo.train_perception --model M --train-data stage1_train.jsonl --eval-data stage1_eval.jsonl \\
        --output-dir O [--epochs 2 --lr 1e-5 --batch-size 1 --grad-accum 16 --qlora/--no-qlora --fps 2 --max-frames 32]

``--train-data`` / ``--eval-data``: this project's stage-1 JSONL (``{doc_id, videos, caption}``) or the
reference's training JSONL (``evidence.caption``; one example per ``doc_id``, the first record with a
caption), :func:`rankvideo.data.formats.read_stage1_examples`.

One example per video: the caption prompt of :mod:`rankvideo.prompts` (system, video, "Caption
this video...") and the target ``<think>{caption}</think>``; the causal-LM loss is computed on the
assistant tokens only. Checkpoints go to ``{output-dir}.checkpoints``; an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from rankvideo import logs, models, prompts
from rankvideo.data import formats
from rankvideo.training.stage2 import add_common_flags, settings_from_args
from rankvideo.training import common
from rankvideo.video import VideoSettings

log = logging.getLogger(__name__)


class CaptionCollator:
    """Examples → processor inputs with ``labels`` = -100 everywhere but the assistant's answer."""

    def __init__(self, processor, settings: VideoSettings):
        self.processor, self.encoded = processor, common.EncodedExamples(processor, settings)
        self.prompt = processor.apply_chat_template(prompts.caption_messages(), tokenize=False, add_generation_prompt=True)

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        answers = [prompts.caption_target(e["caption"]) + "<|im_end|>" for e in examples]
        batch = self.encoded.batch([self.prompt + a for a in answers], [e["videos"][0] for e in examples],
                                   padding_side="right")
        labels = torch.full_like(batch["input_ids"], -100)
        lengths = batch["attention_mask"].sum(dim=1)
        for row, answer in enumerate(answers):
            # the answer follows the generation prompt; special tokens split text, so its ids are
            # the same alone as inside the whole sequence
            n = len(self.processor.tokenizer(answer, add_special_tokens=False)["input_ids"])
            end = int(lengths[row])
            labels[row, end - n:end] = batch["input_ids"][row, end - n:end]
        batch["labels"] = labels
        return batch


def train(model_path: str, train_data, eval_data, output_dir, settings: common.TrainSettings,
          options: models.LoadOptions = models.LoadOptions()):
    from transformers import Trainer

    common.set_threads(settings)
    output_dir = Path(output_dir)
    checkpoints = output_dir.with_name(output_dir.name + ".checkpoints")
    train_records = common.read_records(train_data, reader=formats.read_stage1_examples)
    eval_records = common.read_records(eval_data, allow_empty=True, reader=formats.read_stage1_examples) if eval_data else None
    eval_records = eval_records or None
    model, processor = common.prepare_model(model_path, settings, options)
    args = common.training_arguments(settings, checkpoints, eval_strategy="steps" if eval_records else "no")
    trainer = Trainer(model=model, args=args, train_dataset=train_records, eval_dataset=eval_records,
                      data_collator=CaptionCollator(processor, settings.video()))
    common.train_and_save(trainer, checkpoints, processor, output_dir, "stage1", model_path, settings,
                          {"train": train_data, "eval": eval_data})
    return trainer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rankvideo.train_perception", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="base model: hub id or folder")
    parser.add_argument("--train-data", required=True, help="stage-1 JSONL {doc_id, videos, caption}, or the "
                                                            "reference's training JSONL (evidence.caption)")
    parser.add_argument("--eval-data", help="the same kind of file, for eval_loss")
    parser.add_argument("--output-dir", required=True)
    add_common_flags(parser, "train_stage1")
    args = parser.parse_args(argv)
    logs.setup()
    try:
        train(args.model, args.train_data, args.eval_data, args.output_dir, settings_from_args(args),
              options=models.LoadOptions(cache_dir=args.cache_dir))
    except (formats.FormatError, OSError) as error:  # bad training data; missing file or model, full disk
        return common.exit_with(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
