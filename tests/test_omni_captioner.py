"""Qwen3-Omni as captioner (HF): a tiny random Qwen3-Omni built locally, loaded by its own class
(text output only: its thinker), captions a test video on CPU."""

import json
import subprocess
import sys

import pytest

from videos import encode


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
    subprocess.run([sys.executable, "-m", "rankvideo.generation.captions", "--video-root", str(omni / "videos"),
                    "--output", str(out), "--model-name", str(omni / "model"), "--fps", "4", "--max-frames", "8",
                    "--tokens-per-frame", "4", "--max-new-tokens", "8", "--batch-size", "1", "--no-progress"],
                   check=True, capture_output=True)
    (line,) = out.read_text().splitlines()
    caption = json.loads(line)
    assert caption["doc_id"] == "v1" and caption["meta"]["frames"] == 8 and caption["meta"]["max_new_tokens"] == 8
