"""Both training stages on CPU with the tiny model: the loss falls, checkpoints resume, a reloaded
folder scores exactly as the in-memory model, QLoRA refuses the CPU clearly."""

import json
import math

import pytest
import torch

from conftest import small_training_data
from rankvideo.data import formats
from rankvideo.training.common import TrainSettings, prepare_model
from rankvideo.training.losses import LossWeights

SMALL = dict(fps=4.0, max_frames=8, tokens_per_frame=4, gradient_checkpointing=False, logging_steps=1,
             save_steps=1000, warmup_ratio=0.0, grad_accum=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("train")
    small_training_data(root, n_train_queries=6, depth=6, eval_fraction=0.2)
    return {"root": root, "data": root / "data", "model": str(tiny_models.vlm(seed=2))}


def losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_stage1_loss_falls_and_records_provenance(data, tmp_path):
    from rankvideo.training import stage1 as train_perception

    settings = TrainSettings(finetune="full", lr=2e-3, batch_size=4, max_steps=25, **SMALL)
    trainer = train_perception.train(data["model"], data["data"] / "stage1_train.jsonl",
                                     data["data"] / "stage1_eval.jsonl", tmp_path / "stage1", settings)
    values = losses(trainer)
    assert sum(values[-5:]) / 5 < 0.7 * sum(values[:5]) / 5, values
    record = json.loads((tmp_path / "stage1" / "rankvideo_training.json").read_text())
    assert record["stage"] == "stage1" and record["settings"]["lr"] == 2e-3 and len(record["code_version"]) == 16
    assert record["data"]["train"]["sha256"] == __import__("hashlib").sha256(
        (data["data"] / "stage1_train.jsonl").read_bytes()).hexdigest()


def test_stage2_learns_resumes_and_reloads_exactly(data, tmp_path):
    from transformers import AutoModelForImageTextToText

    from rankvideo.training import stage2 as train_reranker
    out = tmp_path / "stage2"
    settings = TrainSettings(finetune="full", lr=1e-3, batch_size=4, max_steps=12, save_steps=6,
                             **{k: v for k, v in SMALL.items() if k != "save_steps"})
    weights = LossWeights(lambda_distill=0.0)
    trainer = train_reranker.train(data["model"], data["data"] / "train.jsonl", None, out, settings, weights)
    assert (tmp_path / "stage2.checkpoints" / "checkpoint-12").is_dir()
    # "interrupted" after step 12: a longer run resumes from the newest checkpoint, not from zero
    longer = TrainSettings(**{**settings.__dict__, "max_steps": 40})
    trainer = train_reranker.train(data["model"], data["data"] / "train.jsonl", None, out, longer, weights)
    steps = [h["step"] for h in trainer.state.log_history if "loss" in h]
    assert min(steps) == 1 and steps[-1] == 40 and sorted(steps) == steps
    values = losses(trainer)
    assert sum(values[-8:]) / 8 < sum(values[:8]) / 8, values
    # the saved folder scores exactly as the in-memory model
    records = formats.read_jsonl(data["data"] / "train.jsonl")[:6]
    collator = train_reranker.PairCollator(trainer.processing_class or trainer.data_collator.processor,
                                           settings.video())
    batch = {k: v for k, v in collator(records).items() if k not in ("group", "positive", "teacher_p_yes")}
    from rankvideo.prompts import single_answer_ids

    yes, no = single_answer_ids(collator.processor.tokenizer)
    trainer.model.eval()
    with torch.no_grad():
        in_memory = train_reranker.answer_scores(trainer.model, batch, yes, no)
        reloaded = AutoModelForImageTextToText.from_pretrained(out).eval()
        from_disk = train_reranker.answer_scores(reloaded, batch, yes, no)
    assert torch.allclose(in_memory, from_disk, atol=1e-6, rtol=0), (in_memory, from_disk)
    # and the rerank backend reads the same number: answer_tokens "auto" is "single" for this folder
    from rankvideo.backends.hf import HFBackend
    from rankvideo.scoring.rerank import resolve_answer_tokens
    from rankvideo.video import load_video

    assert resolve_answer_tokens(str(out), "auto") == "single"
    assert resolve_answer_tokens(data["model"], "auto") == "variants"
    backend = HFBackend(str(out), device="cpu", answer_tokens="single")
    served = [backend.score_video(load_video(r["videos"][0], settings.video()), [r["query"]])[0]["logit_delta"]
              for r in records]
    assert torch.allclose(in_memory, torch.tensor(served), atol=1e-4, rtol=0), (in_memory, served)
    # every token that decodes to yes / no (the reference's inference) reads a diluted, other number
    variants = HFBackend(str(out), device="cpu", answer_tokens="variants")
    assert len(variants.yes_ids) > 1
    # the folder records the prompt it was trained with; the rerank step reads it (and warns on a mismatch)
    from rankvideo.scoring.rerank import trained_prompt_variant
    assert trained_prompt_variant(str(out)) == "default" and trained_prompt_variant(data["model"]) is None


def test_checkpoints_of_another_run_are_not_resumed(data, tmp_path, caplog):
    from safetensors.torch import load_file

    from rankvideo.training import stage2 as train_reranker

    out, checkpoints = tmp_path / "stage2", tmp_path / "stage2.checkpoints"
    settings = TrainSettings(finetune="full", lr=1e-3, batch_size=2, max_steps=4, save_steps=2,
                             **{k: v for k, v in SMALL.items() if k != "save_steps"})
    weights = LossWeights(lambda_distill=0.0)
    train_reranker.train(data["model"], data["data"] / "train.jsonl", None, out, settings, weights)
    first = load_file(out / "model.safetensors")
    # the same run again (say the output folder was lost): it resumes from its last checkpoint
    with caplog.at_level("INFO"):
        train_reranker.train(data["model"], data["data"] / "train.jsonl", None, out, settings, weights)
    assert "resuming from" in caplog.text and "another run" not in caplog.text
    assert all(torch.equal(v, load_file(out / "model.safetensors")[k]) for k, v in first.items())
    # another learning rate or loss weight: the old checkpoints are not this run's; it starts over
    for changed, expected in ((dict(settings=TrainSettings(**{**settings.__dict__, "lr": 5e-4})), "settings.lr"),
                              (dict(weights=LossWeights(lambda_distill=0.0, lambda_point=0.5)),
                               "extra.loss_weights.lambda_point, settings.lr")):  # against the lr=5e-4 run
        caplog.clear()
        with caplog.at_level("INFO"):
            trainer = train_reranker.train(data["model"], data["data"] / "train.jsonl", None, out,
                                           changed.get("settings", settings), changed.get("weights", weights))
        assert f"holds checkpoints of another run (it differs in {expected})" in caplog.text, caplog.text
        assert "resuming from" not in caplog.text
        assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [1, 2, 3, 4]
        assert not torch.equal(first["lm_head.weight"], load_file(out / "model.safetensors")["lm_head.weight"])
        assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-4", "run.json"]


def candidates_spec(data, train, out):
    section = dict(finetune="full", lr=1e-3, groups_per_batch=2, max_steps=6, num_negs=1, lambda_distill=0.0, **SMALL)
    return {"stage": "stage2", "model": data["model"], "train": str(train), "eval": None, "output": str(out),
            "settings": section, "seed": 42, "models": {"offline": True}, "prompt_variant": "default",
            "descriptions": None}


def test_stage2_candidates_keep_the_lowest_final_training_loss(data, tmp_path, caplog):
    """train_stage2.candidates: seeds 42..44; the one finished before an interruption is not trained
    again (unless another run's), the other two train at once in their own processes, the lowest
    final loss is kept."""
    from rankvideo.training import launch
    from rankvideo.training.common import RECORD

    out = tmp_path / "stage2"
    spec = candidates_spec(data, data["data"] / "train.jsonl", out)
    section = spec["settings"]
    # seed 43 of another run (another lr) finished, then the job was stopped: not reused
    launch.train(launch.prepare_candidates(dict(spec, settings=dict(section, lr=5e-4)), 3)[1][1], processes=1)
    with caplog.at_level("INFO"):
        folder, specs = launch.prepare_candidates(spec, 3)
    assert "holds candidates of another run; starting over" in caplog.text and not (folder / "seed-43").exists()
    # seed 43 of this run finished before an interruption: kept
    launch.train(specs[1], processes=1)
    done_loss = launch.final_loss(formats.read_json(folder / "seed-43" / "loss_history.json"))
    caplog.clear()
    with caplog.at_level("INFO"):
        found = launch.train_candidates(spec, 3, processes=1, threads=2)
    assert "training 2 candidates at once, 1 thread(s) each" in caplog.text and "another run" not in caplog.text
    assert sorted(found) == [42, 43, 44] and found[43] == done_loss and len(set(found.values())) == 3, found
    chosen = min(found, key=found.get)
    record = formats.read_json(out / RECORD)
    assert record["candidates"] == {"chosen_seed": chosen, "selected_by": "final_training_loss",
                                    "final_training_loss": {str(k): v for k, v in found.items()}}
    assert record["settings"]["seed"] == chosen
    assert launch.final_loss(formats.read_json(out / "loss_history.json")) == found[chosen]
    assert not (tmp_path / "stage2.candidates").exists()
    # the final loss is the mean over the last tenth of the logged steps
    history = [{"step": s, "loss": float(s)} for s in range(1, 21)] + [{"step": 20, "eval_loss": 0.0}]
    assert launch.final_loss(history) == pytest.approx((18 + 19 + 20) / 3)
    with pytest.raises(ValueError, match="no training loss was logged"):
        launch.final_loss([{"step": 5, "train_loss": 1.0}], "x")


def test_a_failed_candidate_fails_the_rule_naming_its_seed(data, tmp_path):
    from rankvideo.training import launch

    bad = tmp_path / "train.jsonl"
    bad.write_text('{"query_id": "q1"}\n')  # no query, doc_id or videos
    with pytest.raises(RuntimeError, match=r"stage2 candidates failed: seed 42 \(status 1\), seed 43 \(status 1\)"):
        launch.train_candidates(candidates_spec(data, bad, tmp_path / "stage2"), 2, processes=1, threads=2)
    assert not (tmp_path / "stage2").exists()


def test_stage2_evaluates_its_loss_at_checkpoints(data, tmp_path):
    from rankvideo.training import stage2 as train_reranker

    settings = TrainSettings(finetune="full", lr=1e-3, batch_size=2, max_steps=4, save_steps=2,
                             **{k: v for k, v in SMALL.items() if k != "save_steps"})
    trainer = train_reranker.train(data["model"], data["data"] / "train.jsonl", data["data"] / "eval.jsonl",
                                   tmp_path / "stage2", settings, LossWeights(lambda_distill=0.0))
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert [h["step"] for h in evals] == [2, 4] and all(math.isfinite(h["eval_loss"]) for h in evals)
    # the logged loss parts are the training batches' only
    assert all("loss_rank" not in h for h in evals)


def test_lora_adapters_are_merged_into_the_output(data, tmp_path):
    from rankvideo.training import stage2 as train_reranker

    settings = TrainSettings(finetune="lora", lr=1e-3, batch_size=2, max_steps=2, **SMALL)
    train_reranker.train(data["model"], data["data"] / "train.jsonl", data["data"] / "eval.jsonl", tmp_path / "lora",
                         settings, LossWeights())
    names = {p.name for p in (tmp_path / "lora").iterdir()}
    assert "model.safetensors" in names and not any("adapter" in n for n in names)
    from rankvideo.backends.hf import HFBackend

    assert HFBackend(str(tmp_path / "lora")).model_name == "lora"


def test_freeze_vision_trains_all_but_the_vision_encoder(data, tmp_path):
    from safetensors.torch import load_file

    from rankvideo.training import stage2 as train_reranker

    settings = TrainSettings(finetune="full", freeze_vision=True, lr=1e-3, batch_size=2, max_steps=3, **SMALL)
    train_reranker.train(data["model"], data["data"] / "train.jsonl", None, tmp_path / "frozen", settings,
                         LossWeights(lambda_distill=0.0))
    before, after = load_file(f"{data['model']}/model.safetensors"), load_file(tmp_path / "frozen" / "model.safetensors")
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    vision = {k for k in before if ".visual." in k and "merger" not in k}
    assert vision and not vision & changed, sorted(vision & changed)
    assert any("merger" in k for k in changed) and any("language_model.layers" in k for k in changed)


def test_qlora_on_cpu_is_a_clear_error(data):
    with pytest.raises(RuntimeError, match="QLoRA needs a CUDA GPU"):
        prepare_model(data["model"], TrainSettings(finetune="qlora"))


@pytest.mark.parametrize("side", ["left", "right"])
def test_encoded_examples_batch_equals_the_processor(data, side):
    """Per-example encodings padded by hand == the processor on the whole batch (what the
    collators used to call every step); a video's pixel values are computed once."""
    from transformers import AutoProcessor

    from rankvideo import prompts
    from rankvideo.training.common import EncodedExamples
    from rankvideo.video import VideoSettings, load_video

    processor = AutoProcessor.from_pretrained(data["model"])
    settings = VideoSettings.with_tokens(4.0, 8, 4)
    records = formats.read_jsonl(data["data"] / "train.jsonl")[:5]
    texts = [prompts.render_rerank(processor, r["query"] + " x" * i) for i, r in enumerate(records)]  # lengths differ
    paths = [r["videos"][0] for r in records]
    encoded = EncodedExamples(processor, settings)
    got = encoded.batch(texts, paths, padding_side=side)
    videos = [load_video(p, settings) for p in paths]
    want = processor(text=texts, videos=[v.frames for v in videos], video_metadata=[v.metadata for v in videos],
                     do_sample_frames=False, do_resize=False, padding=True, padding_side=side, return_tensors="pt")
    assert set(got) == set(want)
    assert len(set(want["attention_mask"].sum(1).tolist())) > 1
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert len(encoded._videos) == len(set(paths))
    assert encoded._video_bytes == sum(entry[1].nbytes for entry in encoded._videos.values())
    # a budget of one video's pixels: the least recently used go, batches stay the same
    small = EncodedExamples(processor, settings, max_video_bytes=encoded._videos[paths[0]][1].nbytes)
    again = small.batch(texts, paths, padding_side=side)
    assert len(small._videos) == 1 and small._video_bytes == small._videos[paths[-1]][1].nbytes
    for key in want:
        assert torch.equal(again[key], want[key]), key


def test_dataloader_workers_default_follows_the_device():
    from rankvideo.training.common import TrainSettings, dataloader_workers

    assert dataloader_workers(TrainSettings()) == 0  # CPU: decode in the training process
    assert dataloader_workers(TrainSettings(dataloader_workers=3)) == 3
    assert TrainSettings.from_config({"dataloader_workers": None}, seed=1).dataloader_workers is None
