"""The HF backend's pipelined path queues a video's scoring on the GPU without waiting for it.

Needs a CUDA GPU (skipped in CI); run on the GPU machine with ``python -m pytest tests/test_pipelined_gpu.py``.
A host sync inside :meth:`HFBackend.launch` (a ``.tolist()`` of a device tensor, a boolean-mask index, a
copy from pageable memory) would make the loop wait for the previous video before queueing the next
one, which is what left an H200 idle for most of a rerank job (issue 26)."""
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from rankvideo.backends.hf import HFBackend  # noqa: E402
from rankvideo.demo.tiny_model import build_tiny_vlm  # noqa: E402
from rankvideo.video import VideoSettings, load_video  # noqa: E402
from tests.videos import make_multivent_tree  # noqa: E402

QUERIES = ["two red circles moving left", "a square", "something blue moving up on a checkered background", "yes",
           "a green triangle"]


@pytest.mark.parametrize("compile", [False, True])
def test_launch_never_waits_for_the_gpu(tmp_path, compile):
    paths = make_multivent_tree(tmp_path / "videos", ["101", "102", "103"], n_frames=16, rate=4)
    settings = VideoSettings.with_tokens(fps=4.0, max_frames=8, tokens_per_frame=4)
    # as a GPU job decodes them: frames still to be resized (on the GPU, in prepare)
    videos = [load_video(paths[v], settings, resize=False) for v in sorted(paths)]
    backend = HFBackend(str(build_tiny_vlm(tmp_path / "vlm", seed=3)), local_files_only=True, device="cuda",
                        compile=compile, query_batch_size=2)
    forms = [QUERIES[:1], QUERIES[:2], QUERIES]  # one query (causal), one chunk (masked), three chunks (cache)
    assert backend.resize_on_device and videos[0].resize_to is not None
    expected = {}
    for video_index, video in enumerate(videos):
        for queries in forms:  # warm-up: compilation, cuDNN/cuBLAS handles, the pinned-memory pool
            expected[video_index, len(queries)] = backend.score_video(video, queries)
    prepared = {(i, len(q)): backend.prepare(video, q) for i, video in enumerate(videos) for q in forms}
    torch.cuda.synchronize()
    pending = {}
    torch.cuda.set_sync_debug_mode("error")
    try:
        for key, item in prepared.items():
            pending[key] = backend.launch(item)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    per_pair = HFBackend.from_model(backend.model, backend.processor, mode="per_pair", compile=compile)
    for (video_index, n), scores in pending.items():
        got = [s["logit_delta"] for s in scores.result()]
        assert got == [s["logit_delta"] for s in expected[video_index, n]]
        reference = per_pair.score_video(videos[video_index], QUERIES[:n])
        assert got == pytest.approx([s["logit_delta"] for s in reference], abs=0.05)


@pytest.mark.parametrize("compile", [False, True])
def test_videos_batched_in_one_pass_never_wait_and_score_as_alone(tmp_path, compile):
    """launch_many with videos of different frame sizes (the vision tower's variable-length flash
    attention) and of one size (its batched groups), several prefixes in one LLM pass (variable-length
    causal flash attention): queued without a host sync, scores as each video's alone (bf16 rounding)."""
    from tests.videos import X264, encode

    sizes = [(64, 48), (96, 64), (64, 48), (48, 96)]
    paths = [encode(tmp_path / f"{i}.mp4", codec="libx264", width=w, height=h, n_frames=12 + 4 * i, rate=4, options=X264)
             for i, (w, h) in enumerate(sizes)]
    settings = VideoSettings.with_tokens(fps=4.0, max_frames=8, tokens_per_frame=4)
    videos = [load_video(p, settings, resize=False) for p in paths]
    backend = HFBackend(str(build_tiny_vlm(tmp_path / "vlm", seed=3)), local_files_only=True, device="cuda",
                        compile=compile, video_batch=4)
    forms = [QUERIES[:1], QUERIES[:3], QUERIES[:2], QUERIES[:1]]
    alone = [[s["logit_delta"] for s in backend.score_video(v, q)] for v, q in zip(videos, forms)]
    batches = [[0, 1, 2, 3], [0, 2], [3, 1]]  # mixed sizes; one size; mixed
    for batch in batches:  # warm-up
        backend.launch_many([backend.prepare(videos[i], forms[i]) for i in batch])[0].result()
    prepared = [[backend.prepare(videos[i], forms[i]) for i in batch] for batch in batches]
    assert all(backend.fits(batch[:i], batch[i]) for batch in prepared for i in range(len(batch)))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pending = [backend.launch_many(batch) for batch in prepared]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    per_pair = HFBackend.from_model(backend.model, backend.processor, mode="per_pair", compile=compile)
    reference = [[s["logit_delta"] for s in per_pair.score_video(v, q)] for v, q in zip(videos, forms)]
    for batch, scores in zip(batches, pending):
        for i, part in zip(batch, scores):
            got = [s["logit_delta"] for s in part.result()]
            assert got == pytest.approx(alone[i], abs=0.05)
            assert got == pytest.approx(reference[i], abs=0.05)


def test_suffix_rows_by_flash_calls_equal_the_masked_kernel(tmp_path):
    """The split attention's masked rows (every video's suffixes) computed by two variable-length flash
    calls merged by their log-sum-exps equal SDPA over the whole pass with the mask: three videos of
    different prefix lengths and suffix counts, random queries, keys and values."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from rankvideo.backends.hf import SPLIT_ATTENTION, PreparedVideo

    backend = HFBackend(str(build_tiny_vlm(tmp_path / "vlm", seed=3)), local_files_only=True, device="cuda",
                        compile=False, video_batch=4)
    assert backend._split_attention
    module = backend.model.model.language_model.layers[0].self_attn
    config = backend.model.model.language_model.config
    heads, kv_heads, dim = config.num_attention_heads, config.num_key_value_heads, module.head_dim
    prefixes, suffixes = [37, 50, 21], [[5, 7], [4], [6, 3, 8]]
    batch = [PreparedVideo(video=None, queries=[""] * len(s), prefix_len=n,
                           host={"rows": torch.tensor(s).cumsum(0) + n - 1}) for n, s in zip(prefixes, suffixes)]
    kwargs = backend._split_layout(batch)
    assert set(kwargs) == {"rankvideo_prefixes", "rankvideo_suffixes"}
    segment, owner, next_segment = [-1] * sum(prefixes), [], 0
    for video, n in enumerate(prefixes):
        owner += [video] * n
    for video, lengths in enumerate(suffixes):
        for length in lengths:
            segment += [next_segment] * length
            owner += [video] * length
            next_segment += 1
    total, prefix = len(segment), sum(prefixes)
    mask = backend._packed_mask(torch.tensor(segment, device="cuda"), prefix, torch.tensor(owner, device="cuda"))
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, h, total, dim, device="cuda", generator=gen, dtype=torch.bfloat16)
               for h in (heads, kv_heads, kv_heads))
    attention = ALL_ATTENTION_FUNCTIONS[SPLIT_ATTENTION]
    scaling = dim ** -0.5
    flash, _ = attention(module, q, k, v, mask, scaling=scaling, dropout=0.0, **kwargs)
    masked, _ = attention(module, q, k, v, mask, scaling=scaling, dropout=0.0,
                          rankvideo_prefixes=kwargs["rankvideo_prefixes"])
    assert flash.shape == masked.shape == (1, total, heads, dim)
    assert (flash.float() - masked.float()).abs().max().item() < 2e-2
    assert (flash[:, prefix:].float() - masked[:, prefix:].float()).abs().max().item() < 2e-2
