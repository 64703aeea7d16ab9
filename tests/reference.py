"""The reference method's settings (REFERENCE.md), key by key, as the effective-config tests
compare them (not a test module)."""

# REFERENCE.md, key by key: the published method's settings
REFERENCE = {
    "seed": 42,
    "rerank.video.fps": 2.0, "rerank.video.max_frames": 32, "rerank.video.tokens_per_frame": 128,
    "rerank.answer_tokens": "auto", "evaluation.score_field": "logit_delta", "evaluation.ks": [5, 10, 20, 50, 100],
    "captions.video.max_frames": 16, "captions.video.tokens_per_frame": 128, "captions.max_new_tokens": 196,
    "teacher.topk": 20,
    "training_data.positive_grade": 1, "training_data.random_judged": 0,
    "train_stage1.enabled": True, "train_stage1.finetune": "lora", "train_stage1.lora_r": 16,
    "train_stage1.lora_alpha": 32, "train_stage1.lora_dropout": 0.05, "train_stage1.lr": 1e-5,
    "train_stage1.epochs": 2.0, "train_stage1.max_steps": -1, "train_stage1.warmup_ratio": 0.03,
    "train_stage1.grad_accum": 16, "train_stage1.gradient_checkpointing": True, "train_stage1.freeze_vision": False,
    "train_stage1.video.fps": 2.0, "train_stage1.video.max_frames": 32, "train_stage1.video.tokens_per_frame": 128,
    "train_stage2.finetune": "lora", "train_stage2.lora_r": 16, "train_stage2.lora_alpha": 32,
    "train_stage2.lora_dropout": 0.05, "train_stage2.lr": 1e-5, "train_stage2.epochs": 2.0,
    "train_stage2.max_steps": -1, "train_stage2.warmup_ratio": 0.03, "train_stage2.grad_accum": 8,
    "train_stage2.gradient_checkpointing": True, "train_stage2.freeze_vision": False,
    "train_stage2.groups_per_batch": 1, "train_stage2.num_negs": 1, "train_stage2.grouping": "reference",
    "train_stage2.fallback": "bce", "train_stage2.point_normalisation": "items",
    "train_stage2.tau_rank": 10.0, "train_stage2.tau_distill": 5.0, "train_stage2.tau_point": 1.0,
    "train_stage2.lambda_distill": 5.0, "train_stage2.lambda_point": 1.0, "train_stage2.candidates": 1,
    "train_stage2.video.fps": 2.0, "train_stage2.video.max_frames": 24, "train_stage2.video.tokens_per_frame": 128,
    "copy_pretrain.steps": 0, "descriptions.enabled": False,
    "models.trust_remote_code": False, "models.allow_pickle_weights": False,
}


def value(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


def differences(config: dict) -> dict:
    return {key: (value(config, key), expected) for key, expected in REFERENCE.items() if value(config, key) != expected}
