"""HF backend, prompts and VLMReranker on a tiny Qwen3-VL built locally and loaded from disk."""

import math

import pytest

from rankvideo import prompts
from rankvideo.models import LoadOptions, ModelNotFoundError, resolve
from rankvideo.demo.synthetic import SyntheticConfig, generate
from rankvideo.video import VideoSettings, load_video

QUERIES = ["two red circles moving left", "a square",
           "something blue moving up on a checkered background, said with many more words than the others", "yes"]
SETTINGS = VideoSettings.with_tokens(fps=4.0, max_frames=8, tokens_per_frame=4)


@pytest.fixture(scope="module")
def tiny_vlm(tiny_models):
    return str(tiny_models.vlm(seed=3))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    generate(SyntheticConfig.from_dict({"n_videos": 4, "n_test_queries": 2, "n_train_queries": 4}), folder)
    return sorted((folder / "videos").glob("*.mp4"))


def job_of(videos, counts):
    """(video ids, video2queries, query texts) of a rerank job: ``counts[i]`` queries for ``videos[i]``."""
    ids = [p.stem for p in videos]
    return ids, {vid: [f"q{i}" for i in range(n)] for vid, n in zip(ids, counts)}, {f"q{i}": q for i, q in enumerate(QUERIES)}


@pytest.fixture(scope="module")
def backend(tiny_vlm):
    from rankvideo.backends.hf import HFBackend

    return HFBackend(tiny_vlm, local_files_only=True)


@pytest.mark.parametrize("suffixes,query_batch_size", [("merged", 3), ("merged", 16), ("cached", 3)])
def test_shared_prefix_equals_per_pair_forward(backend, videos, suffixes, query_batch_size):
    """Every way of scoring against the shared prefix gives the per-pair forward's scores: prefix and
    all suffixes in one forward (16), prefix + 3 suffixes then one more against the cache (merged, 3),
    and prefix alone then two chunks against the cache (cached, 3); queries of different lengths."""
    video = load_video(videos[0], SETTINGS)
    assert backend._split_attention  # the prefix's rows run causally, the suffixes' through the mask
    backend.query_batch_size, backend.suffixes = query_batch_size, suffixes
    try:
        shared = backend.score_video(video, QUERIES)
        backend.mode = "per_pair"
        per_pair = backend.score_video(video, QUERIES)
    finally:
        backend.mode, backend.query_batch_size, backend.suffixes = "shared_prefix", 16, "merged"
    assert len({round(s["logit_delta"], 6) for s in shared}) > 1, "queries must get different scores"
    for a, b in zip(shared, per_pair):
        for field in ("logprob_yes", "logprob_no", "logit_delta", "p_yes"):
            assert a[field] == pytest.approx(b[field], abs=1e-5), field
        assert a["p_yes"] == pytest.approx(1 / (1 + math.exp(-a["logit_delta"])))
        assert a["logprob_yes"] < 0 and a["logprob_no"] < 0


def test_split_prompts_equals_rendering_each(backend):
    queries = QUERIES + ["{query} with braces", "ünïcode and \\ backslash"]
    for description in (None, "Two red circles move left.", "A {single} blue square.", None):
        prefix, suffixes = backend.split_prompts(queries, description)  # the suffix template follows the description
        for query, suffix in zip(queries, suffixes):
            assert (prefix, suffix) == backend.split_prompt(query, description)
            assert (description is not None) == suffix.startswith(f"Video description: {description}\n")


def test_shared_prefix_with_descriptions_equals_per_pair(backend, videos):
    """One video scored with two descriptions in turn: each call's scores are the per-pair forward's
    with that description, and the description changes them."""
    video = load_video(videos[0], SETTINGS)
    shared = [backend.score_video(video, QUERIES, d) for d in ("Two red circles move left.", "A blue square.")]
    backend.mode = "per_pair"
    try:
        per_pair = [backend.score_video(video, QUERIES, d) for d in ("Two red circles move left.", "A blue square.")]
    finally:
        backend.mode = "shared_prefix"
    for one, other in zip(shared, per_pair):
        assert [s["logit_delta"] for s in one] == pytest.approx([s["logit_delta"] for s in other], abs=1e-5)
    assert shared[0][0]["logit_delta"] != pytest.approx(shared[1][0]["logit_delta"], abs=1e-6)


def test_speed_switches_keep_scores(tiny_vlm, videos, backend):
    """transformers' own vision attention and the processor on the CPU (the benchmark's stock paths)
    give the same scores; a backend built around loaded objects works like one that loads them."""
    from rankvideo.backends.hf import HFBackend

    video = load_video(videos[2], SETTINGS)
    fast = backend.score_video(video, QUERIES[:3])
    stock = HFBackend.from_model(backend.model, backend.processor, "tiny", vision_attention="transformers",
                                 suffixes="cached", processor_device="cpu", compile=False)
    try:
        slow = stock.score_video(video, QUERIES[:3])
        assert backend.model._rankvideo_batched_vision is False
    finally:
        backend._activate()
    for a, b in zip(fast, slow):
        assert a["logit_delta"] == pytest.approx(b["logit_delta"], abs=1e-5)
    with pytest.raises(ValueError, match="suffixes"):
        HFBackend.from_model(backend.model, backend.processor, suffixes="padded")


def test_failed_compile_falls_back_to_eager(tiny_vlm, videos, monkeypatch, caplog):
    """compile=True where compiling fails: one warning, then the eager forward (same scores)."""
    import torch

    from rankvideo.backends.hf import HFBackend

    def broken_compile(fn, *args, **kwargs):
        def run(*a, **k):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    compiled = HFBackend(tiny_vlm, local_files_only=True, compile=True)
    eager = HFBackend.from_model(compiled.model, compiled.processor, compile=False)
    video = load_video(videos[3], SETTINGS)
    with caplog.at_level("WARNING"):
        scores = compiled.score_video(video, QUERIES[:2])
    assert "torch.compile failed" in caplog.text and compiled.model._rankvideo_compile.failed
    for a, b in zip(scores, eager.score_video(video, QUERIES[:2])):
        assert a["logit_delta"] == pytest.approx(b["logit_delta"], abs=1e-6)


def test_prompt_split_is_exact(backend):
    prefix, suffix = backend.split_prompt("a red circle")
    assert prefix.endswith("<|vision_start|><|video_pad|><|vision_end|>")
    assert suffix == ("Query: a red circle\nIs the video relevant? Answer with yes or no.<|im_end|>\n"
                      "<|im_start|>assistant\n<answer>")
    assert prefix.startswith("<|im_start|>system\n" + prompts.rerank_prompt("default").system)


def test_reference_inference_prompt_byte_for_byte(backend):
    text = prompts.render_rerank(backend.processor, "flood in Spain", "reference_inference")
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant specialized in video and text understanding. Given a text "
        "query and a video, your task is to determine if the video is relevant to the query. Respond with "
        "<answer>yes</answer> if the video is relevant, or <answer>no</answer> if it is not. <|im_end|>\n"
        "<|im_start|>user\nQuery: flood in Spain\nIs the video relevant to the query? Respond with "
        "<answer>yes</answer> or <answer>no</answer>.<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n"
        "<|im_start|>assistant\n")


def test_answer_token_sets(backend):
    tokenizer = backend.processor.tokenizer
    yes, no = prompts.answer_token_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids("yes") in yes and len(yes) >= 2  # "yes" and " yes"
    assert all(tokenizer.decode([i]).strip().lower() == "no" for i in no)
    y, n = prompts.single_answer_ids(tokenizer)
    assert y in yes and n in no


def test_reference_variant_scores_per_pair(tiny_vlm, videos):
    from rankvideo.backends.hf import HFBackend

    reference = HFBackend(tiny_vlm, prompt_variant="reference_inference")
    assert reference.mode == "per_pair"
    scores = reference.score_video(load_video(videos[0], SETTINGS), QUERIES[:2])
    assert len(scores) == 2 and all(math.isfinite(s["logit_delta"]) for s in scores)


def test_query_first_variant_is_default_with_the_query_before_the_video(backend, tiny_vlm, videos):
    from rankvideo.backends.hf import HFBackend

    default = prompts.render_rerank(backend.processor, "flood in Spain", "default")
    query_first = prompts.render_rerank(backend.processor, "flood in Spain", "query_first")
    video = "<|vision_start|><|video_pad|><|vision_end|>"
    assert query_first.index("Query: flood in Spain") < query_first.index(video)
    assert default.index(video) < default.index("Query: flood in Spain")
    assert sorted(query_first) == sorted(default) and query_first.endswith(prompts.ANSWER_OPEN)
    query_first_backend = HFBackend(tiny_vlm, prompt_variant="query_first")
    assert query_first_backend.mode == "per_pair"
    scores = query_first_backend.score_video(load_video(videos[0], SETTINGS), QUERIES[:2])
    assert len(scores) == 2 and all(math.isfinite(s["logit_delta"]) for s in scores)


def test_vlm_reranker_api(tiny_vlm, videos, backend):
    from rankvideo import VLMReranker

    reranker = VLMReranker(model_path=tiny_vlm, cache_dir=None, backend="hf", video_settings=SETTINGS)
    paths = [str(videos[0]), str(videos[1]), str(videos[0])]
    scores = reranker.score_batch(QUERIES[:3], paths, fps=4.0, max_frames=8)
    assert [set(s) for s in scores] == [{"logprob_yes", "logprob_no", "logit_delta", "p_yes", "logit_delta_yes_minus_no"}] * 3
    assert all(s["logit_delta_yes_minus_no"] == s["logit_delta"] for s in scores)
    # grouping by video does not change a pair's score
    alone = backend.score_video(load_video(videos[0], SETTINGS), [QUERIES[2]])[0]
    assert scores[2]["logit_delta"] == pytest.approx(alone["logit_delta"], abs=1e-5)
    texts = reranker.generate_batch(["Caption this video."], [str(videos[1])], max_new_tokens=5)
    assert len(texts) == 1 and isinstance(texts[0], str)


def test_unknown_model_fails_with_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as error:
        resolve("nobody/no-such-model", LoadOptions(cache_dir=str(tmp_path)))
    message = str(error.value)
    assert "nobody/no-such-model" in message and "offline mode is on" in message and "\n" not in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        resolve(tmp_path / "empty")


def test_batched_vision_attention_equals_transformers_own(backend, videos, monkeypatch):
    """The one-call-per-video vision attention gives the stock per-frame-group result; it is set on the
    model's attention modules, never on the transformers class (issue 25)."""
    import torch
    from transformers.models.qwen3_vl import modeling_qwen3_vl

    video = load_video(videos[1], SETTINGS)
    inputs = backend._processor_inputs([backend.split_prompt("a red circle")[0]], video)
    visual = backend.model.model.visual
    attn = visual.blocks[0].attn
    assert type(attn).forward is modeling_qwen3_vl.Qwen3VLVisionAttention.forward
    assert type(attn).forward.__module__ == modeling_qwen3_vl.__name__ and "forward" in vars(attn)
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting(q, *args, **kwargs):
        calls.append(tuple(q.shape))
        return sdpa(q, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting)
    groups = int(inputs["video_grid_thw"][0, 0])
    with torch.no_grad():
        batched = visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"]).pooler_output
        assert len(calls) == len(visual.blocks) and all(shape[0] == groups for shape in calls)  # one call a layer
        backend.model._rankvideo_batched_vision = False
        try:
            stock = visual(inputs["pixel_values_videos"], grid_thw=inputs["video_grid_thw"]).pooler_output
        finally:
            backend._activate()
    assert torch.allclose(torch.cat(list(batched)), torch.cat(list(stock)), atol=1e-5)


def test_compiled_layers_compile_once_for_all_video_sizes_lengths_and_query_counts(tiny_vlm, tmp_path, monkeypatch):
    """compile=True (dynamo with its eager backend here, so the test needs no C compiler): after the first
    video's two call forms (several queries, one query), videos of other frame sizes (other frame-group
    sizes h*w), other lengths and other query counts add no graph; scores as without compiling."""
    import torch

    from rankvideo.backends.hf import HFBackend
    from tests.videos import X264, encode

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: real_compile(fn, backend="eager", **kwargs))
    torch._dynamo.reset()
    compiled = HFBackend(tiny_vlm, local_files_only=True, compile=True)
    eager = HFBackend.from_model(compiled.model, compiled.processor, compile=False)
    settings = VideoSettings.with_tokens(fps=2.0, max_frames=8, tokens_per_frame=4)
    clips = [(128, 96, 8), (96, 128, 4), (160, 96, 6), (128, 128, 8)]  # width, height, frames at 2 fps
    loaded = [load_video(encode(tmp_path / f"c{i}.mp4", codec="libx264", width=w, height=h, n_frames=n, rate=2,
                                options=X264), settings) for i, (w, h, n) in enumerate(clips)]
    assert len({tuple(v.frames.shape) for v in loaded}) == 4
    try:
        first = compiled.score_video(loaded[0], QUERIES[:3]) + compiled.score_video(loaded[0], QUERIES[:1])
        after_first = compiled.compile_stats()
        assert after_first["graphs_per_kind"]["vision_block"] == 1
        later = [compiled.score_video(video, QUERIES[:q]) for video, q in zip(loaded[1:], (2, 1, 4))]
        stats = compiled.compile_stats()
        assert stats["graphs_per_kind"] == after_first["graphs_per_kind"]
        assert stats["frames_compiled"] == after_first["frames_compiled"]
        reference = eager.score_video(loaded[0], QUERIES[:3]) + eager.score_video(loaded[0], QUERIES[:1])
        reference_later = [eager.score_video(video, QUERIES[:q]) for video, q in zip(loaded[1:], (2, 1, 4))]
    finally:
        torch._dynamo.reset()
    for a, b in zip(first + [s for v in later for s in v], reference + [s for v in reference_later for s in v]):
        assert a["logit_delta"] == pytest.approx(b["logit_delta"], abs=1e-5)


@pytest.mark.parametrize("resize_on_device", [False, True])
def test_pipelined_rerank_loop_writes_what_score_video_gives(backend, videos, tmp_path, resize_on_device):
    """The rerank loop with the HF backend runs pipelined: each video's host work (prompts, tokens,
    pixels, positions) in the decode threads, the next video launched before the previous one's
    scores are read. The files it writes hold exactly what score_video gives video by video, for one
    query, several, and more than one chunk of suffixes (query_batch_size 2); also when the frames
    reach the backend unresized (what a GPU job does: resized in prepare, on the model's device)."""
    import threading

    from rankvideo.data import formats
    from rankvideo.scoring.rerank import rerank_unlocked
    from rankvideo.video import VideoResolver

    assert backend._lean is not None  # transformers' precomputed vision inputs are used
    counts = [1, 3, 4, 2]
    ids, video2queries, texts = job_of(videos, counts)
    threads = []
    prepare = backend.prepare

    def recording_prepare(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return prepare(*args, **kwargs)

    backend.prepare, backend.query_batch_size, backend.resize_on_device = recording_prepare, 2, resize_on_device
    try:
        summary = rerank_unlocked(video2queries, texts, VideoResolver(videos[0].parent, "flat"), tmp_path / "out",
                                  backend.score_video, "m", SETTINGS, progress=False, decode_ahead=2, decode_workers=2)
        del backend.prepare
        expected = {vid: backend.score_video(load_video(path, SETTINGS), [texts[q] for q in video2queries[vid]])
                    for vid, path in zip(ids, videos)}
    finally:
        backend.__dict__.pop("prepare", None)
        backend.query_batch_size, backend.resize_on_device = 16, False
    assert summary.videos_scored == 4 and summary.pairs_scored == sum(counts) and summary.seconds_preparing > 0
    assert len(threads) == 4 and all(name.startswith("rankvideo-decode") for name in threads)
    for vid in ids:
        written = formats.read_video_scores(tmp_path / "out" / formats.rerank_filename(vid, "m"))[vid]
        assert [written[q]["logit_delta"] for q in video2queries[vid]] == [s["logit_delta"] for s in expected[vid]]


def test_prepare_from_many_threads_at_once(backend, videos):
    """A job's decode threads call prepare concurrently (tokenizer, processor, chat template): the
    prepared inputs are those of one call at a time."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    loaded = [load_video(p, SETTINGS) for p in videos]
    jobs = [(i % len(loaded), 1 + i % len(QUERIES), "A blue square." if i % 3 == 0 else None) for i in range(48)]

    def prepare(job):
        video, n, description = job
        return backend.prepare(loaded[video], QUERIES[:n], description).host

    serial = [prepare(job) for job in jobs]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(prepare, jobs))
    for host, reference in zip(threaded, serial):
        assert host.keys() == reference.keys()
        assert all(torch.equal(host[k], reference[k]) for k in host)


def test_prepare_in_two_halves_gives_the_inputs_of_one(backend, videos):
    """prepare_host with the pixels deferred (a GPU job's decode processes: the text side from the
    frames' count and target size only), then adopt (resizing and processing the frames where the model
    is), gives the inputs prepare_host gives from the resized frames; for odd frame counts too (the
    processor pads time), frames smaller than a merged patch, and a description. The host side also works
    pickled, weightless."""
    import pickle
    from dataclasses import replace

    import torch

    raw = [load_video(p, SETTINGS, resize=False) for p in videos]
    odd = replace(raw[0], frames=raw[0].frames[:3],
                  metadata={**raw[0].metadata, "frames_indices": raw[0].metadata["frames_indices"][:3]})
    tiny = replace(raw[1], frames=torch.randint(0, 256, (4, 3, 20, 40), dtype=torch.uint8,
                                                generator=torch.Generator().manual_seed(0)), resize_to=(32, 64),
                   metadata={**raw[1].metadata, "frames_indices": raw[1].metadata["frames_indices"][:4]})
    host = pickle.loads(pickle.dumps(backend.host_side())).backend()
    assert next(host.model.parameters()).device.type == "meta"
    backend.resize_on_device = True  # on the CPU here: adopt resizes and processes on the model's device
    try:
        for i, video in enumerate(raw + [odd, tiny]):
            queries, description = QUERIES[:1 + i % 3], ("A blue square." if i % 2 else None)
            whole = backend.prepare_host(video.resized(), queries, description)
            halves = backend.adopt(host.prepare_host(video, queries, description, defer_pixels=True))
            assert video.resize_to is not None and halves.video.frames is None
            assert whole.host.keys() == halves.host.keys() and torch.equal(whole.grid, halves.grid)
            for key in whole.host:
                assert torch.equal(whole.host[key], halves.host[key]), key
            assert (whole.prefix_len, whole.next_position) == (halves.prefix_len, halves.next_position)
    finally:
        backend.resize_on_device = False


@pytest.mark.parametrize("resize_on_device", [False, True])
def test_pipelined_rerank_loop_prepares_in_decode_processes(backend, videos, tmp_path, resize_on_device):
    """With ``decode_in_processes`` the decode processes also prepare each video (a weightless copy of
    the backend: prompts, tokens, positions, vision tables; the pixels too, or left to the model's device)
    and the main process only adopts what comes back: the written scores equal score_video's."""
    from rankvideo.data import formats
    from rankvideo.scoring.rerank import rerank_unlocked
    from rankvideo.video import VideoResolver

    counts = [2, 1, 4, 3]
    ids, video2queries, texts = job_of(videos, counts)
    backend.query_batch_size, backend.resize_on_device = 3, resize_on_device
    try:
        summary = rerank_unlocked(video2queries, texts, VideoResolver(videos[0].parent, "flat"), tmp_path / "out",
                                  backend.score_video, "m", SETTINGS, progress=False, decode_ahead=2, decode_workers=2,
                                  decode_in_processes=True)
        expected = {vid: backend.score_video(load_video(path, SETTINGS), [texts[q] for q in video2queries[vid]])
                    for vid, path in zip(ids, videos)}
    finally:
        backend.query_batch_size, backend.resize_on_device = 16, False
    assert summary.videos_scored == 4 and summary.pairs_scored == sum(counts) and summary.seconds_preparing > 0
    assert summary.decodes == 4
    for vid in ids:
        written = formats.read_video_scores(tmp_path / "out" / formats.rerank_filename(vid, "m"))[vid]
        assert [written[q]["logit_delta"] for q in video2queries[vid]] == [s["logit_delta"] for s in expected[vid]]


def test_videos_batched_in_one_pass_score_as_alone(backend, videos):
    """launch_many lays several videos' prefixes and suffixes end to end in one vision pass and one LLM
    pass (each prefix causal within itself, each suffix seeing its own prefix and itself): the scores
    equal each video's alone, for videos of different frame sizes and counts, one query or several, with
    and without a description; fits keeps a batch within video_batch, BATCH_TOKENS and one chunk."""
    from dataclasses import replace

    import torch

    from rankvideo.backends import hf

    raw = [load_video(p, SETTINGS) for p in videos]
    small = replace(raw[1], frames=torch.randint(0, 256, (4, 3, 32, 64), dtype=torch.uint8,
                                                 generator=torch.Generator().manual_seed(1)),
                    metadata={**raw[1].metadata, "frames_indices": raw[1].metadata["frames_indices"][:4]})
    cases = [(raw[0], QUERIES[:1], None), (small, QUERIES[:3], "A blue square."), (raw[2], QUERIES[2:3], "Circles."),
             (raw[3], QUERIES, None)]
    alone = [backend.score_video(video, queries, description) for video, queries, description in cases]
    prepared = [backend.prepare(video, queries, description) for video, queries, description in cases]
    backend.video_batch = 4
    try:
        assert all(backend.fits(prepared[:i], prepared[i]) for i in range(4))
        together = [pending.result() for pending in backend.launch_many(prepared)]
        passes = []
        backend._launch_batch = lambda batch: passes.append(len(batch)) or type(backend)._launch_batch(backend, batch)
        try:  # a batchable video alone takes the masked pass of a batch too (one call form to compile)
            single = backend.launch_many(prepared[:1])[0].result()
        finally:
            del backend._launch_batch
        assert passes == [1] and len(single) == 1
        assert single[0]["logit_delta"] == pytest.approx(alone[0][0]["logit_delta"], abs=1e-4)
        assert not backend.fits(prepared, prepared[0])  # video_batch reached
        backend.video_batch = 8
        tokens = sum(int(p.host["input_ids"].shape[1]) for p in prepared)
        assert backend.fits(prepared, prepared[0])
        try:
            hf.BATCH_TOKENS = tokens
            assert not backend.fits(prepared, prepared[0])  # the token budget reached
        finally:
            hf.BATCH_TOKENS = 16384
        backend.query_batch_size = 2  # more queries than one chunk: such a video runs alone
        chunked = backend.prepare(raw[3], QUERIES)
        assert not backend.batchable(chunked) and not backend.fits(prepared[:1], chunked)
    finally:
        backend.video_batch, backend.query_batch_size = 1, 16
    assert not backend.batchable(prepared[0])  # video_batch 1: nothing is batched
    for got, want in zip(together, alone):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g["logit_delta"] == pytest.approx(w["logit_delta"], abs=1e-4)
            assert g["logprob_yes"] == pytest.approx(w["logprob_yes"], abs=1e-4)


def test_rerank_loop_groups_videos_into_passes(backend, videos, tmp_path):
    """With video_batch > 1 the rerank loop hands the backend consecutive videos in groups: a video whose
    queries need more than one chunk runs alone and ends the group before it; the files hold each video's
    own scores (equal to score_video's up to float rounding) and every video is scored once."""
    from rankvideo.data import formats
    from rankvideo.scoring.rerank import rerank_unlocked
    from rankvideo.video import VideoResolver

    counts = [1, 3, 1, 2]
    ids, video2queries, texts = job_of(videos, counts)
    groups = []
    launch_many = backend.launch_many

    def recording_launch_many(batch):
        groups.append([len(p.queries) for p in batch])
        return launch_many(batch)

    backend.launch_many, backend.query_batch_size, backend.video_batch = recording_launch_many, 2, 3
    try:
        summary = rerank_unlocked(video2queries, texts, VideoResolver(videos[0].parent, "flat"), tmp_path / "out",
                                  backend.score_video, "m", SETTINGS, progress=False, decode_ahead=2, decode_workers=2)
        backend.video_batch = 1
        expected = {vid: backend.score_video(load_video(path, SETTINGS), [texts[q] for q in video2queries[vid]])
                    for vid, path in zip(ids, videos)}
    finally:
        backend.__dict__.pop("launch_many", None)
        backend.query_batch_size, backend.video_batch = 16, 1
    assert groups == [[1], [3], [1, 2]]
    assert summary.videos_scored == 4 and summary.pairs_scored == sum(counts)
    for vid in ids:
        written = formats.read_video_scores(tmp_path / "out" / formats.rerank_filename(vid, "m"))[vid]
        assert [written[q]["logit_delta"] for q in video2queries[vid]] == pytest.approx(
            [s["logit_delta"] for s in expected[vid]], abs=1e-4)


def test_weights_read_ahead_of_the_load(tiny_vlm, monkeypatch, tmp_path):
    """A rerank job reads a local model's weight files in a background thread while its imports run
    (models.prefetch_weights); a hub id is left alone unless offline, and a name that does not resolve
    ends the thread quietly (the load reports it)."""
    from pathlib import Path

    from rankvideo import models

    opened = []
    monkeypatch.setattr(models, "open", lambda path, *a, **k: opened.append(Path(path).name) or open(path, *a, **k),
                        raising=False)
    thread = models.prefetch_weights(tiny_vlm)
    thread.join(timeout=60)
    assert not thread.is_alive() and opened == sorted(p.name for p in Path(tiny_vlm).glob("*.safetensors")) != []
    read = len(opened)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert models.prefetch_weights("someone/some-model", models.LoadOptions(local_files_only=False)) is None
    missing = models.prefetch_weights("someone/some-model", models.LoadOptions(cache_dir=str(tmp_path),
                                                                               local_files_only=True))
    missing.join(timeout=60)
    assert not missing.is_alive() and len(opened) == read
