"""The vLLM backend against the transformers backend, on the tiny Qwen3-VL.

vLLM lives in its own environment (``tools/setup_vllm_cpu.sh``; its python is
``$RANKVIDEO_VLLM_PYTHON``, default ``<repo>/.venv-vllm/bin/python``), so the vLLM side runs in a
subprocess (``tools/vllm_score.py``, JSON in / JSON out) while this process scores the same pairs
with :class:`HFBackend` (float32). Both run in float32: vLLM's answer log-probabilities must match
HF's to float32 rounding, the prompt token ids must be identical, every query after the first of a
video must hit the prefix cache, and greedy generation must give the same text.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.vllm  # vLLM's own environment and engine start (minutes)

RUNNER = REPO / "tools" / "vllm_score.py"
#: float32 on both sides; different kernels (vLLM's CPU attention, fused norms) leave ~1e-6
TOLERANCE = 1e-4
BLOCK_SIZE = 32  # small KV blocks, so the tiny prompts' shared prefix spans whole blocks
#: eager mode starts in seconds; RANKVIDEO_VLLM_TEST_EAGER=0 tests the torch.compile'd model (~1 min more)
EAGER = os.environ.get("RANKVIDEO_VLLM_TEST_EAGER", "1") != "0"

QUERIES = ["a red circle moving left", "two blue squares on a checkered background",
           "Is there a dog? uh okay you know", "yellow triangle moving up"]


def _synthetic(t: int, h: int, w: int, shift: int, step: int = 3, fps: float = 6.0):
    """Frames as rankvideo.video hands them over (uint8 [T, 3, H, W], sampled every ``step``-th frame)."""
    import torch
    from videos import frame_pattern

    from rankvideo.video import LoadedVideo

    indices = [step * i for i in range(t)]
    frames = np.stack([frame_pattern(i + shift, h, w) for i in indices]).transpose(0, 3, 1, 2)
    total = step * t
    metadata = {"fps": fps, "frames_indices": indices, "total_num_frames": total, "duration": total / fps,
                "video_backend": "synthetic"}
    return LoadedVideo(frames=torch.from_numpy(np.ascontiguousarray(frames)), metadata=metadata,
                       sample_fps=fps / step, reader="synthetic")


@pytest.fixture(scope="module")
def tiny_vlm(tiny_models) -> Path:
    return tiny_models.vlm(seed=0)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict:
    """Two videos of the same shape (a wrong cache hit across videos would go unnoticed otherwise),
    two other shapes, and a real mp4 decoded by rankvideo.video."""
    from videos import X264, encode

    from rankvideo.video import VideoSettings, load_video

    out = {
        "same_a": _synthetic(4, 64, 96, shift=0),
        "same_b": _synthetic(4, 64, 96, shift=40),
        "tall": _synthetic(6, 96, 64, shift=7, step=2, fps=7.3),
        "big": _synthetic(8, 128, 128, shift=3),
    }
    mp4 = encode(tmp_path_factory.mktemp("vllm_videos") / "clip.mp4", codec="libx264", width=64, height=48,
                 n_frames=30, rate=10, options=X264)
    out["mp4"] = load_video(mp4, VideoSettings.with_tokens(2.0, 8, 4), video_id="mp4")
    return out


def _queries(video_id: str) -> list[str]:
    return QUERIES if video_id != "tall" else QUERIES[:2]


def _generation_requests() -> list[dict]:
    from rankvideo import prompts

    text_only = [{"role": "user", "content": [{"type": "text", "text": "Describe a red circle."}]}]
    return [{"video": "big", "messages": prompts.caption_messages(), "max_new_tokens": 8},
            {"video": None, "messages": text_only, "max_new_tokens": 6}]


@pytest.fixture(scope="module")
def compared(vllm_python, tiny_vlm, videos, tmp_path_factory) -> dict:
    """vLLM (subprocess) and HF (this process) results for the same pairs; the two run concurrently."""
    work = tmp_path_factory.mktemp("vllm_run")
    entries = []
    for video_id, video in videos.items():
        np.save(work / f"{video_id}.npy", video.frames.numpy())
        entries.append({"id": video_id, "frames": f"{video_id}.npy", "metadata": video.metadata,
                        "sample_fps": video.sample_fps, "queries": _queries(video_id)})
    request = {
        "model": str(tiny_vlm),
        "options": {"dtype": "float32", "max_model_len": 2048, "block_size": BLOCK_SIZE, "enforce_eager": EAGER,
                    "kv_cache_space_gib": 1, "max_num_seqs": 16, "vllm_cache_root": str(work / "vllm-cache")},
        "videos": entries,
        "passes": 2,
        "generate": _generation_requests(),
        "benchmark": {"pairs": 100, "queries_per_video": 10},
    }
    (work / "request.json").write_text(json.dumps(request))
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.Popen([str(vllm_python), str(RUNNER), str(work / "request.json"), str(work / "out.json")],
                            cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    from rankvideo.backends.hf import HFBackend

    hf = HFBackend(str(tiny_vlm), device="cpu", dtype="float32")
    hf_scores = {vid: hf.score_video(video, _queries(vid)) for vid, video in videos.items()}
    hf_ids = {vid: [hf._processor_inputs([hf._render(q)], video)["input_ids"][0].tolist() for q in _queries(vid)]
              for vid, video in videos.items()}
    hf_generations = [hf.generate(videos[g["video"]] if g["video"] else None, g["messages"], g["max_new_tokens"])
                      for g in _generation_requests()]

    log, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, f"vLLM runner failed ({proc.returncode}):\n{log[-6000:]}"
    result = json.loads((work / "out.json").read_text())
    return {"vllm": result, "hf_scores": hf_scores, "hf_ids": hf_ids, "hf_generations": hf_generations, "log": log}


def test_prompt_tokens_identical(compared):
    for video_id, ids in compared["hf_ids"].items():
        assert compared["vllm"]["prompt_token_ids"][video_id] == ids, video_id


def test_scores_match_hf(compared):
    worst = 0.0
    for video_id, hf_scores in compared["hf_scores"].items():
        vllm_scores = compared["vllm"]["scores"][video_id]
        assert len(vllm_scores) == len(hf_scores)
        for hf, vl in zip(hf_scores, vllm_scores):
            assert set(vl) == {"logprob_yes", "logprob_no", "logit_delta", "p_yes"}
            for key in ("logprob_yes", "logprob_no", "logit_delta"):
                diff = abs(hf[key] - vl[key])
                worst = max(worst, diff) if key == "logit_delta" else worst
                assert diff <= TOLERANCE, (video_id, key, hf[key], vl[key])
            assert abs(hf["p_yes"] - vl["p_yes"]) <= TOLERANCE
    # the videos of one shape differ in content, so their scores must differ too (no cross-video cache hit)
    a, b = compared["vllm"]["scores"]["same_a"], compared["vllm"]["scores"]["same_b"]
    assert any(x["logit_delta"] != y["logit_delta"] for x, y in zip(a, b))
    print(f"max |logit_delta(HF) - logit_delta(vLLM)| = {worst:.2e}")


def test_prefix_cache_hits(compared):
    counts = compared["vllm"]["token_counts"]
    for video_id, passes in counts.items():
        first, second = passes
        for prompt_tokens, cached in first + second:
            assert cached % BLOCK_SIZE == 0 and 0 <= cached < prompt_tokens
        # within one batch, every query after the first reuses the video's prefix
        assert all(cached > 0 for _, cached in first[1:]), (video_id, first)
        # scoring the video again: every query is served from the cache
        assert all(cached > 0 for _, cached in second), (video_id, second)
    stats = compared["vllm"]["stats"]
    assert stats["cached_tokens"] > 0
    print(f"prefix cache: {stats['cached_tokens']} of {stats['prompt_tokens']} prompt tokens cached")


def test_generate_matches_hf(compared):
    generations = compared["vllm"]["generations"]
    assert len(generations) == 2 and all(isinstance(g, str) for g in generations)
    assert generations == compared["hf_generations"]


def test_throughput_reported(compared):
    bench = compared["vllm"]["benchmark"]
    assert bench["pairs"] >= 100 and bench["pairs_per_second"] > 0
    assert bench["cached_tokens"] > 0
    print(f"vLLM CPU, tiny Qwen3-VL: {bench['pairs_per_second']:.1f} pairs/s (frames {bench['frames_shape']}, "
          f"{bench['queries_per_video']} queries/video); engine start {compared['vllm']['engine_start_s']:.1f} s")


def test_video_uuid_follows_content():
    from rankvideo.backends.vllm import video_uuid

    a, a2, b = _synthetic(4, 64, 96, 0), _synthetic(4, 64, 96, 0), _synthetic(4, 64, 96, 1)
    assert video_uuid(a) == video_uuid(a2) != video_uuid(b)
    a2.metadata["fps"] = 5.0  # same pixels, other timestamps: another prompt
    assert video_uuid(a2) != video_uuid(a)
