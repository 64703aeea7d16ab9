"""Stage 2: train the reranker (pairwise + teacher distillation + pointwise) with transformers' Trainer.

    python -m rankvideo.train_reranker --model STAGE1 --train-data train.jsonl --eval-data eval.jsonl \\
        --output-dir O [--num-negs 1 --tau-rank 10 --tau-distill 5 --tau-point 1 --lambda-distill 5 --lambda-point 1]
        [--epochs --lr --batch-size --grad-accum --finetune full|lora|qlora --fps --max-frames]

A batch is one query group (one positive + ``num_negs`` negatives, :mod:`rankvideo.training.sampler`),
as in the reference, whose ``--batch-size`` the group sampler overrides; ``--groups-per-batch`` puts
several groups in one batch;
``s = logit[yes] - logit[no]`` is read at the position after ``<answer>`` of the one prompt module's
default prompt, the position inference scores. Checkpoints go to ``{output-dir}.checkpoints`` and an
interrupted run resumes from the newest one; the output folder loads directly in the rerank rule
and ``VLMReranker`` (adapters merged). Runs under torchrun / accelerate for DDP.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from rankvideo import config, logs, models, prompts
from rankvideo.data import formats
from rankvideo.training import common
from rankvideo.training.losses import CONFIG_KEYS, VARIANTS, LossWeights, reranker_loss
from rankvideo.training.sampler import GROUPINGS, GroupBatchSampler
from rankvideo.data.training_data import is_positive
from rankvideo.video import VideoSettings

log = logging.getLogger(__name__)


class PairCollator:
    """Examples → processor inputs (left-padded: the answer position is the last) + group, label and
    teacher tensors."""

    def __init__(self, processor, settings: VideoSettings, prompt_variant: str = "default"):
        self.processor, self.variant = processor, prompt_variant
        self.encoded = common.EncodedExamples(processor, settings)

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        texts = [prompts.render_rerank(self.processor, e["query"], self.variant, e.get("description")) for e in examples]
        batch = self.encoded.batch(texts, [e["videos"][0] for e in examples], padding_side="left")
        # a group is a positive and the negatives after it (the sampler's order): a new group starts at a
        # new query or at a second positive of the same query, so that two groups of one query stay two
        group_ids, current, query, has_positive = [], -1, None, False
        for e in examples:
            positive = bool(is_positive(e))
            if e["query_id"] != query or (positive and has_positive):
                current, query, has_positive = current + 1, e["query_id"], False
            has_positive |= positive
            group_ids.append(current)
        batch["group"] = torch.tensor(group_ids)
        batch["positive"] = torch.tensor([bool(is_positive(e)) for e in examples])
        batch["teacher_p_yes"] = torch.tensor([math.nan if e.get("teacher_p_yes") is None else float(e["teacher_p_yes"])
                                               for e in examples])
        return batch


def answer_scores(model, inputs: dict, yes_id: int, no_id: int):
    """``logit[yes] - logit[no]`` at each row's last token (rows are left-padded).

    The call goes through the model's own forward (so DDP / DataParallel / PEFT wrappers work) with
    ``logits_to_keep=1``: only the answer position is projected to the vocabulary."""
    logits = model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1]
    return logits[:, yes_id] - logits[:, no_id]


def make_trainer_class():
    from torch.utils.data import DataLoader
    from transformers import Trainer

    class EpochLoader(DataLoader):
        def set_epoch(self, epoch: int) -> None:
            self.batch_sampler.set_epoch(epoch)

    class RerankerTrainer(Trainer):
        """Trainer with query-group batches and the stage-2 loss."""

        def __init__(self, *args, weights: LossWeights, yes_id: int, no_id: int, num_negs: int, groups_per_batch: int,
                     grouping: str, **kwargs):
            super().__init__(*args, **kwargs)
            self.weights, self.yes_id, self.no_id = weights, yes_id, no_id
            self.num_negs, self.groups_per_batch, self.grouping = num_negs, groups_per_batch, grouping
            self.loss_parts: dict[str, list[float]] = {}

        def _group_loader(self, dataset, seed):
            sampler = GroupBatchSampler([e["query_id"] for e in dataset], [is_positive(e) for e in dataset],
                                        num_negs=self.num_negs, groups_per_batch=self.groups_per_batch, seed=seed,
                                        rank=self.args.process_index, world_size=self.args.world_size,
                                        grouping=self.grouping)
            return EpochLoader(dataset, batch_sampler=sampler, collate_fn=self.data_collator,
                               num_workers=self.args.dataloader_num_workers)

        def get_train_dataloader(self):
            return self._group_loader(self.train_dataset, self.args.seed)

        def get_eval_dataloader(self, eval_dataset=None):
            return self._group_loader(eval_dataset if eval_dataset is not None else self.eval_dataset, 0)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            group, positive, teacher = inputs.pop("group"), inputs.pop("positive"), inputs.pop("teacher_p_yes")
            s = answer_scores(model, inputs, self.yes_id, self.no_id).float()
            loss, parts = reranker_loss(s, group, positive, teacher.to(s.dtype), self.weights)
            if model.training:  # the logged parts are the training loss's
                for name, value in parts.items():
                    self.loss_parts.setdefault(name, []).append(value)
            return (loss, {"scores": s}) if return_outputs else loss

        def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
            """Evaluation: the stage-2 loss on the eval split's query groups (reported as ``eval_loss``;
            the batches carry no ``labels``, so Trainer's own step would compute none)."""
            import torch

            inputs = self._prepare_inputs(inputs)
            with torch.no_grad():
                loss = self.compute_loss(model, dict(inputs))
            return loss.detach(), None, None

        def log(self, logs_: dict, *args, **kwargs):
            for name, values in self.loss_parts.items():
                logs_[f"loss_{name}"] = round(sum(values) / len(values), 5)
            self.loss_parts = {}
            super().log(logs_, *args, **kwargs)

    return RerankerTrainer


def attach_descriptions(records: list[dict], descriptions_path, data_path) -> None:
    """Set each record's ``description`` (shown before its query, :func:`rankvideo.prompts.render_rerank`)
    from the JSONL ``{doc_id, text}`` at ``descriptions_path``; a record whose video has none is an
    error that names it (the describe rule's failure manifest says why)."""
    descriptions = formats.read_id_text_jsonl(descriptions_path)
    missing = sorted({r["doc_id"] for r in records if r["doc_id"] not in descriptions})
    if missing:
        raise ValueError(f"{descriptions_path}: no description of {len(missing)} video(s) of {data_path} "
                         f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); see the failure manifest "
                         "beside it")
    for record in records:
        record["description"] = descriptions[record["doc_id"]]


def train(model_path: str, train_data, eval_data, output_dir, settings: common.TrainSettings, weights: LossWeights,
          num_negs: int = 1, prompt_variant: str = "default",
          options: models.LoadOptions = models.LoadOptions(), descriptions=None):
    """Train stage 2 into ``output_dir``; returns the Trainer (its model: the saved, merged one).
    ``descriptions``: JSONL ``{doc_id, text}``; each pair's prompt then shows its video's description
    before the query (and inference must show it too: the training record says so)."""
    common.set_threads(settings)
    output_dir = Path(output_dir)
    checkpoints = output_dir.with_name(output_dir.name + ".checkpoints")
    train_records = common.read_records(train_data, ("query_id", "query", "doc_id", "videos"))
    eval_records = common.read_records(eval_data, ("query_id", "query", "doc_id", "videos"), allow_empty=True) if eval_data else None
    eval_records = eval_records or None
    if descriptions:
        for records, path in ((train_records, train_data), (eval_records or [], eval_data)):
            attach_descriptions(records, descriptions, path)
    model, processor = common.prepare_model(model_path, settings, options)
    yes_id, no_id = prompts.single_answer_ids(processor.tokenizer)
    trainer_class = make_trainer_class()
    # a batch is query groups (1 positive + num_negs negatives): one as in the reference, whose
    # sampler overrides --batch-size; settings.batch_size plays no part here
    groups_per_batch, grouping = groups_settings(settings)
    args = common.training_arguments(settings, checkpoints, eval_strategy="steps" if eval_records else "no")
    trainer = trainer_class(model=model, args=args, train_dataset=train_records, eval_dataset=eval_records,
                            data_collator=PairCollator(processor, settings.video(), prompt_variant),
                            weights=weights, yes_id=yes_id, no_id=no_id, num_negs=num_negs,
                            groups_per_batch=groups_per_batch, grouping=grouping)
    common.train_and_save(trainer, checkpoints, processor, output_dir, "stage2", model_path, settings,
                          {"train": train_data, "eval": eval_data, "descriptions": descriptions},
                          extra={"prompt_variant": prompt_variant, "loss_weights": asdict(weights), "num_negs": num_negs,
                                 "groups_per_batch": groups_per_batch, "grouping": grouping,
                                 "descriptions": prompts.DESCRIPTION_LAYOUT if descriptions else None})
    return trainer


def groups_settings(settings: common.TrainSettings) -> tuple[int, str]:
    """(query groups per batch, grouping) of a stage-2 run: the config's ``groups_per_batch`` and
    ``grouping`` (the reference's 1 and ``reference`` by default)."""
    return int(settings.extra.get("groups_per_batch", 1)), settings.extra.get("grouping", "reference")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rankvideo.train_reranker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="stage-1 folder (or any Qwen3-VL: hub id or folder)")
    parser.add_argument("--train-data", required=True)
    parser.add_argument("--eval-data")
    parser.add_argument("--output-dir", required=True)
    add_common_flags(parser, "train_stage2")
    section = config.defaults("train_stage2")
    parser.add_argument("--num-negs", type=int, default=section["num_negs"])
    parser.add_argument("--groups-per-batch", type=int, default=section["groups_per_batch"],
                        help="query groups per batch (the reference: 1; its --batch-size, accepted here, does not "
                             "change the batch)")
    parser.add_argument("--grouping", choices=GROUPINGS, default=section["grouping"],
                        help="reference: one group per query and epoch (a random positive, negatives with "
                             "replacement when too few; only queries with both); per_positive: one group per positive")
    parser.add_argument("--descriptions", help="JSONL {doc_id, text}: a description of each video, shown before "
                                               "the query (score the model with the same descriptions)")
    parser.add_argument("--prompt-variant", choices=list(prompts.RERANK_VARIANTS), default="default",
                        help="the prompt to train with; score the model with the same one")
    for name in CONFIG_KEYS:
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=section[name])
    for name, choices in VARIANTS.items():
        parser.add_argument("--" + name.replace("_", "-"), choices=choices, default=section[name])
    return parser


def add_common_flags(parser, section: str) -> None:
    """Flags both stages share (the reference's, plus finetune mode and video sampling), their defaults
    those of the config schema's ``section`` (``train_stage1`` / ``train_stage2``)."""
    values = config.defaults(section)
    video = values["video"]
    parser.add_argument("--epochs", type=float, default=values["epochs"])
    parser.add_argument("--max-steps", type=int, default=values["max_steps"],
                        help="stop after this many optimizer steps (-1: epochs)")
    parser.add_argument("--lr", type=float, default=values["lr"])
    parser.add_argument("--batch-size", type=int, default=values.get("batch_size", 3),
                        help="examples per batch (stage 1); stage 2 accepts the reference's flag, whose batch is "
                             "one query group whatever it says (see --groups-per-batch)")
    parser.add_argument("--grad-accum", type=int, default=values["grad_accum"])
    parser.add_argument("--warmup-ratio", type=float, default=values["warmup_ratio"])
    parser.add_argument("--finetune", choices=["full", "lora", "qlora"], default=values["finetune"])
    parser.add_argument("--qlora", dest="finetune", action="store_const", const="qlora", help="same as --finetune qlora")
    parser.add_argument("--no-qlora", dest="finetune", action="store_const", const="lora", help="same as --finetune lora")
    parser.add_argument("--lora-r", type=int, default=values["lora_r"])
    parser.add_argument("--lora-alpha", type=int, default=values["lora_alpha"])
    parser.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    parser.add_argument("--freeze-vision", action="store_true",
                        help="full fine-tuning: keep the vision encoder fixed (its mergers train)")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                        help="auto: bf16 on GPU, fp32 on CPU")
    parser.add_argument("--fps", type=float, default=video["fps"])
    parser.add_argument("--max-frames", type=int, default=video["max_frames"])
    parser.add_argument("--tokens-per-frame", type=int, default=video["tokens_per_frame"])
    parser.add_argument("--seed", type=int, default=config.defaults()["seed"])
    parser.add_argument("--logging-steps", type=int, default=values["logging_steps"])
    parser.add_argument("--save-steps", type=int, default=values["save_steps"])
    parser.add_argument("--cache-dir")


def settings_from_args(args) -> common.TrainSettings:
    extra = {name: getattr(args, name) for name in ("groups_per_batch", "grouping") if hasattr(args, name)}
    return common.TrainSettings(extra=extra,
        epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, batch_size=args.batch_size, grad_accum=args.grad_accum,
        warmup_ratio=args.warmup_ratio, finetune=args.finetune, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
        gradient_checkpointing=args.gradient_checkpointing, freeze_vision=args.freeze_vision, bf16={"auto": None, "bf16": True, "fp32": False}[args.precision],
        fps=args.fps, max_frames=args.max_frames,
        tokens_per_frame=args.tokens_per_frame, seed=args.seed, logging_steps=args.logging_steps,
        save_steps=args.save_steps)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup()
    weights = LossWeights(**{name: getattr(args, name) for name in (*CONFIG_KEYS, *VARIANTS)})
    try:
        train(args.model, args.train_data, args.eval_data, args.output_dir, settings_from_args(args), weights,
              num_negs=args.num_negs, prompt_variant=args.prompt_variant,
              options=models.LoadOptions(cache_dir=args.cache_dir), descriptions=args.descriptions)
    except (formats.FormatError, OSError) as error:  # bad training data; missing file or model, full disk
        return common.exit_with(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
