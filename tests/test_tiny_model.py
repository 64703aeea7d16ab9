"""Tests of rankvideo.demo.tiny_model: build, offline reload, tokenizer, determinism, forward/generate."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
VIDEO_ITEM = "<|vision_start|><|video_pad|><|vision_end|>"


def _file_hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """Both kinds built through the CLI, in parallel subprocesses."""
    root = tmp_path_factory.mktemp("tiny_cli")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    procs = {
        kind: subprocess.Popen(
            [sys.executable, "-m", "rankvideo.demo.tiny_model", "--kind", kind, "--output", str(root / kind),
             "--seed", "0"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for kind in ("vlm", "text")
    }
    # overlap this process's heavy imports with the two builds
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText  # noqa: F401

    for kind, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{kind} build failed:\n{out}"
        assert "saved tiny" in out  # progress goes through logging
    return {kind: root / kind for kind in procs}


@pytest.fixture(scope="module")
def vlm(built):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(built["vlm"])
    model = AutoModelForImageTextToText.from_pretrained(built["vlm"]).eval()
    return processor, model


@pytest.fixture(scope="module")
def text_lm(built):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(built["text"])
    model = AutoModelForCausalLM.from_pretrained(built["text"]).eval()
    return tokenizer, model


def test_vlm_reloads_offline_with_consistent_config(built, vlm):
    processor, model = vlm
    names = {p.name for p in built["vlm"].iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "processor_config.json", "chat_template.jinja"} <= names
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert type(processor.video_processor).__name__ == "Qwen3VLVideoProcessor"
    assert processor.video_processor.cap_pixels_per_frame is True
    cfg, tok = model.config, processor.tokenizer
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")
    assert cfg.vision_config.out_hidden_size == cfg.text_config.hidden_size == 128
    assert max(cfg.vision_config.deepstack_visual_indexes) < cfg.vision_config.depth
    rope = cfg.text_config.rope_parameters
    assert sum(rope["mrope_section"]) == cfg.text_config.head_dim // 2
    assert len(tok) <= cfg.text_config.vocab_size < len(tok) + 64
    gen = model.generation_config
    assert tok.convert_tokens_to_ids("<|im_end|>") in gen.eos_token_id
    assert gen.pad_token_id == tok.convert_tokens_to_ids("<|endoftext|>")
    assert 0.5e6 < model.num_parameters() < 2e6


def test_text_model_reloads_offline(built, text_lm):
    tokenizer, model = text_lm
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert 0.1e6 < model.num_parameters() < 2e6
    # both kinds share one tokenizer
    assert (built["vlm"] / "tokenizer.json").read_bytes() == (built["text"] / "tokenizer.json").read_bytes()


@pytest.mark.parametrize("kind", ["vlm", "text"])
def test_tokenizer_yes_no_and_added_tokens(built, kind):
    from transformers import AutoTokenizer, Qwen2Tokenizer

    tok = AutoTokenizer.from_pretrained(built[kind])
    for word in ("yes", "no", " yes", " no"):
        ids = tok.encode(word, add_special_tokens=False)
        assert len(ids) == 1, (word, ids)
        assert tok.decode(ids).strip().lower() == word.strip()
    assert tok.convert_ids_to_tokens(tok.encode("<answer>yes</answer>", add_special_tokens=False)) == [
        "<answer>", "yes", "</answer>"]
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<think>", "</think>"):
        assert len(tok.encode(special, add_special_tokens=False)) == 1, special
    # <think>/<answer> survive skip_special_tokens; chat markers do not
    ids = tok.encode("<|im_start|>assistant\n<think>ok</think><answer>no</answer><|im_end|>",
                     add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "assistant\n<think>ok</think><answer>no</answer>"
    # the domain vocabulary is compact, and Qwen2Tokenizer (what real checkpoints name) reads the same
    text = "Query: two red circles moving left across a checkered background\nuh okay you know"
    assert len(tok.tokenize(text)) <= 20
    qwen2 = Qwen2Tokenizer.from_pretrained(built[kind])
    sample = text + " <|vision_start|><|video_pad|><|vision_end|><answer>yes</answer> Ünïcode 42"
    assert qwen2.encode(sample) == tok.encode(sample)


def test_chat_template_renders_video_and_generation_prompt(vlm, text_lm):
    processor, _ = vlm
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
                                     {"type": "text", "text": "Query: red circle\nIs the video relevant?"}]},
    ]
    rendered = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{VIDEO_ITEM}Query: red circle\nIs the video relevant?<|im_end|>\n"
        "<|im_start|>assistant\n")
    no_prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert not no_prompt.endswith("<|im_start|>assistant\n")
    with_answer = processor.apply_chat_template(
        messages + [{"role": "assistant", "content": "<answer>yes</answer>"}], tokenize=False)
    assert with_answer.endswith("<|im_start|>assistant\n<answer>yes</answer><|im_end|>\n")
    tokenizer, _ = text_lm
    text = tokenizer.apply_chat_template([{"role": "user", "content": "[Caption] a red circle"}],
                                         tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\n[Caption] a red circle<|im_end|>\n<|im_start|>assistant\n"


def test_determinism_across_processes_and_seeds(built, tiny_models):
    """The CLI's build in a child process, the session's in-process builds (tests/conftest.py): the
    same seed gives the same bytes, another seed other weights only."""
    from safetensors.torch import load_file

    for kind in ("vlm", "text"):
        reference = _file_hashes(built[kind])
        same = _file_hashes(tiny_models.build(kind, seed=0))
        assert same == reference, kind
        other_dir = tiny_models.build(kind, seed=1)
        other = _file_hashes(other_dir)
        assert other["model.safetensors"] != reference["model.safetensors"]
        assert {k: v for k, v in other.items() if k != "model.safetensors"} == {
            k: v for k, v in reference.items() if k != "model.safetensors"}
        w0 = load_file(built[kind] / "model.safetensors")
        w1 = load_file(other_dir / "model.safetensors")
        assert w0.keys() == w1.keys()
        assert any(not (w0[k] == w1[k]).all() for k in w0 if "norm" not in k)


def test_size_overrides(tmp_path):
    import json

    from rankvideo.demo.tiny_model import build_tiny_vlm

    out = build_tiny_vlm(tmp_path / "small", seed=3, vision_depth=1, num_hidden_layers=1, hidden_size=64,
                         intermediate_size=128)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["vision_config"]["depth"] == 1 and cfg["vision_config"]["deepstack_visual_indexes"] == [0]
    assert cfg["text_config"]["hidden_size"] == cfg["vision_config"]["out_hidden_size"] == 64
    with pytest.raises(TypeError):
        build_tiny_vlm(tmp_path / "bad", no_such_size=1)
    with pytest.raises(ValueError):
        build_tiny_vlm(tmp_path / "bad", deepstack_visual_indexes=[5])


def test_vlm_forward_on_small_video(vlm):
    import numpy as np
    import torch

    processor, model = vlm
    t, h, w = 8, 64, 64
    # a yellow square moving right on a black background
    frames = np.zeros((t, h, w, 3), dtype=np.uint8)
    for i in range(t):
        frames[i, 24:40, 4 + 6 * i:20 + 6 * i] = (255, 255, 0)
    messages = [{"role": "user", "content": [
        {"type": "video"}, {"type": "text", "text": "Query: yellow square moving right\nIs the video relevant?"}]}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + "<answer>"
    inputs = processor(text=[prompt], videos=[frames], return_tensors="pt", do_sample_frames=False,
                       video_metadata=[{"fps": 4.0, "total_num_frames": t, "frames_indices": list(range(t))}])
    grid = inputs["video_grid_thw"][0].tolist()
    assert grid == [t // 2, h // 16, w // 16]
    video_id = model.config.video_token_id
    n_video = int((inputs["input_ids"] == video_id).sum())
    assert n_video == grid[0] * grid[1] * grid[2] // 4
    assert int((inputs["mm_token_type_ids"] == 2).sum()) == n_video
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(out.logits).all()
    tok = processor.tokenizer
    last = out.logits[0, -1]
    delta = last[tok.convert_tokens_to_ids("yes")] - last[tok.convert_tokens_to_ids("no")]
    assert torch.isfinite(delta)


def test_text_model_generates(text_lm):
    import torch

    tokenizer, model = text_lm
    messages = [{"role": "user", "content": "Query: red circle\n[Caption] A red circle moves left.\n[ASR] uh okay"}]
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    prompt_len = enc["input_ids"].shape[1]
    assert out.shape[0] == 1 and prompt_len < out.shape[1] <= prompt_len + 6
    # greedy decoding: each new token is the argmax of the model's logits after the tokens before it
    with torch.no_grad():
        logits = model(input_ids=out[:, :-1]).logits[0]
    new = out[0, prompt_len:]
    assert torch.equal(logits[prompt_len - 1:].argmax(-1), new)


def test_linear_patch_embedding_equals_the_convolution(vlm):
    """models.use_linear_patch_embed: the Conv3d (kernel = stride) as one matrix product, same outputs
    and weight gradients."""
    import torch

    from rankvideo import models

    model = vlm[1]
    models.use_linear_patch_embed()
    embed = model.model.visual.patch_embed
    shape = (-1, embed.in_channels, embed.temporal_patch_size, embed.patch_size, embed.patch_size)
    x = torch.randn(24, embed.proj.weight[0].numel(), generator=torch.Generator().manual_seed(0))
    convolved = embed.proj(x.view(shape)).view(-1, embed.embed_dim)
    grad_conv = torch.autograd.grad(convolved.square().sum(), embed.proj.weight)[0]
    linear = embed(x)
    grad_linear = torch.autograd.grad(linear.square().sum(), embed.proj.weight)[0]
    assert type(embed).rankvideo_linear
    assert torch.allclose(linear, convolved, atol=1e-5)
    assert torch.allclose(grad_linear, grad_conv, atol=1e-4)
