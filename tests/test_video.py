"""rankvideo.video: resolving ids, loading videos like qwen-vl-utils, reasons for failures."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import pytest

from rankvideo import video as V
from rankvideo.data.formats import FormatError
from rankvideo.video import FailureLog, LoadedVideo, VideoError, VideoResolver, VideoSettings, load_video

from videos import frame_pattern, make_test_videos

torch = pytest.importorskip("torch")
HAVE_DECORD = importlib.util.find_spec("decord") is not None
needs_decord = pytest.mark.skipif(not HAVE_DECORD, reason="decord is not installed")

#: small settings: 2 fps, at most 8 frames, 64 tokens per frame
SMALL = VideoSettings.with_tokens(fps=2.0, max_frames=8, tokens_per_frame=64)

#: decord 0.6.0 cannot read these test videos (AV1; frame width 48); PyAV must take over
DECORD_FAILS = {"av1_mp4", "h264_mov"}

#: the reason each broken video must give
BROKEN_REASONS = {
    "empty": "empty file",
    "truncated": "truncated",
    "truncated_faststart": "truncated",
    "text": "not a video / cannot be decoded",
    "audio_only": "no video stream",
    "wav_named": "no video stream",
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return make_test_videos(tmp_path_factory.mktemp("videos"))


def ok_ids():
    import videos as factory

    return sorted(factory.GOOD) + ["vfr_mkv"]


# ----------------------------------------------------------------------------- settings


def test_paper_settings():
    paper = VideoSettings.paper()
    assert (paper.fps, paper.max_frames, paper.image_patch_size) == (2.0, 32, 16)
    assert paper.min_pixels == paper.max_pixels == 128 * 32 * 32
    assert paper.total_pixels == 32 * 128 * 32 * 32
    assert paper.factor == 32
    assert VideoSettings() == paper
    assert VideoSettings.from_dict(None) == paper
    assert VideoSettings.from_dict(paper.to_dict()) == paper


def test_settings_from_dict():
    s = VideoSettings.from_dict({"fps": 1, "max_frames": 8, "tokens_per_frame": 64})
    assert (s.fps, s.max_frames, s.min_pixels, s.max_pixels, s.total_pixels) == (1, 8, 65536, 65536, 8 * 65536)
    # only max_frames changed: the paper's per-frame budget is kept, total rescaled
    s = VideoSettings.from_dict({"max_frames": 24})
    assert s.total_pixels == 24 * 128 * 32 * 32 and s.max_pixels == 128 * 32 * 32
    with pytest.raises(ValueError, match="unknown video setting"):
        VideoSettings.from_dict({"fsp": 2})
    for bad in ({"fps": 0}, {"max_frames": 1}, {"min_frames": 9, "max_frames": 8},
                {"min_pixels": 10, "max_pixels": 5}, {"tokens_per_frame": 0}, {"max_pixels": -1}):
        with pytest.raises(ValueError):
            VideoSettings.from_dict(bad)


def test_max_pixels_alone_lowers_min_pixels():
    """qwen-vl-utils asserts when max_pixels < its default min_pixels: both are always passed."""
    s = VideoSettings(min_pixels=None, max_pixels=32 * 32 * 16, total_pixels=None)
    element = s.qwen_element("x.mp4")
    assert element["min_pixels"] == element["max_pixels"] == 32 * 32 * 16
    element = VideoSettings(min_pixels=None, max_pixels=None, total_pixels=None).qwen_element("x.mp4")
    assert element["min_pixels"] == 128 * 32 * 32 and "max_pixels" not in element


# ----------------------------------------------------------------------------- resolving


UNSAFE_IDS = ["", ".", "..", "../x", "a/b", "/etc/passwd", "a\x00b", "a\\b", "x\n", "..\\..\\x"]


def test_flat_layout(tmp_path):
    (tmp_path / "a.webm").write_bytes(b"x")
    (tmp_path / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.mkv").write_bytes(b"x")
    (tmp_path / "c.MOV").write_bytes(b"x")
    (tmp_path / "d.mp4").mkdir()  # a folder is not a video
    resolver = VideoResolver(tmp_path)
    assert resolver.resolve("a") == tmp_path / "a.mp4"  # mp4 before webm
    assert resolver.resolve("b") == tmp_path / "b.mkv"
    assert resolver.resolve("c") == tmp_path / "c.MOV"
    for missing in ("d", "zzz"):
        with pytest.raises(VideoError) as info:
            resolver.resolve(missing)
        assert info.value.reason.startswith("missing file") and info.value.video_id == missing


@pytest.mark.parametrize("layout", ["flat", "multivent"])
@pytest.mark.parametrize("video_id", UNSAFE_IDS)
def test_unsafe_ids_are_refused(tmp_path, layout, video_id):
    (tmp_path / "passwd.mp4").write_bytes(b"x")
    with pytest.raises(VideoError) as info:
        VideoResolver(tmp_path / "videos", layout=layout).resolve(video_id)
    assert info.value.reason.startswith("unsafe id")


def test_multivent_layout(tmp_path):
    resolver = VideoResolver(tmp_path, layout="multivent")
    expected = {"0": "000001/0.mp4", "99": "000001/99.mp4", "100": "000002/100.mp4",
                "12345": "000124/12345.mp4", "007": "000001/007.mp4"}
    for video_id, rel in expected.items():
        assert resolver.candidates(video_id) == [tmp_path / rel]
    (tmp_path / "000124").mkdir()
    (tmp_path / "000124" / "12345.mp4").write_bytes(b"x")
    assert resolver.resolve("12345") == tmp_path / "000124" / "12345.mp4"
    with pytest.raises(VideoError, match="missing file") as info:
        resolver.resolve("12346")
    assert info.value.path == str(tmp_path / "000124" / "12346.mp4")
    for bad in ("abc", "12a", "-5", "+5", "1.5", "\u0661\u0662"):  # ١٢: Arabic-Indic digits
        with pytest.raises(VideoError, match="integer"):
            resolver.resolve(bad)


def test_index_layout(tmp_path):
    (tmp_path / "idx" / "clips").mkdir(parents=True)
    (tmp_path / "idx" / "clips" / "a.mp4").write_bytes(b"x")
    (tmp_path / "base" / "clips").mkdir(parents=True)
    (tmp_path / "base" / "clips" / "a.mp4").write_bytes(b"y")
    elsewhere = tmp_path / "elsewhere.webm"
    elsewhere.write_bytes(b"x")
    index = tmp_path / "idx" / "videos.tsv"
    index.write_text(f"a\tclips/a.mp4\nb\t{elsewhere}\nc\tclips/missing.mp4\n", encoding="utf-8")
    resolver = VideoResolver(layout="index", index=index)
    assert resolver.ids() == ["a", "b", "c"]
    assert resolver.resolve("a") == tmp_path / "idx" / "clips" / "a.mp4"  # relative to the TSV's folder
    assert resolver.resolve("b") == elsewhere  # absolute paths as they are
    with pytest.raises(VideoError, match="missing file"):
        resolver.resolve("c")
    with pytest.raises(VideoError, match="not in video index"):
        resolver.resolve("d")
    # with a video folder, relative paths are relative to it
    based = VideoResolver.from_config({"dir": str(tmp_path / "base"), "layout": "index", "index": str(index)})
    assert based.resolve("a") == tmp_path / "base" / "clips" / "a.mp4"
    index.write_text("a\tx\na\ty\n", encoding="utf-8")
    with pytest.raises(FormatError):
        VideoResolver(layout="index", index=index)


def test_resolver_arguments(tmp_path):
    with pytest.raises(ValueError):
        VideoResolver(tmp_path, layout="nested")
    with pytest.raises(ValueError):
        VideoResolver(layout="flat")
    with pytest.raises(ValueError):
        VideoResolver(tmp_path, layout="index")


# ----------------------------------------------------------------------------- loading


def check_loaded(loaded: LoadedVideo, settings: VideoSettings) -> None:
    t, c, h, w = loaded.frames.shape
    assert loaded.frames.dtype == torch.uint8 and c == 3
    assert 2 <= t <= settings.max_frames and t % 2 == 0
    assert h % settings.factor == 0 and w % settings.factor == 0
    meta = loaded.metadata
    assert set(meta) >= {"fps", "frames_indices", "total_num_frames", "video_backend"}
    assert meta["video_backend"] == loaded.reader
    assert len(meta["frames_indices"]) == t
    assert all(0 <= i < meta["total_num_frames"] for i in meta["frames_indices"])
    assert meta["frames_indices"] == sorted(meta["frames_indices"])
    assert meta["fps"] > 0 and loaded.sample_fps > 0


def test_the_parametrized_ids_are_the_factorys_good_and_broken_videos(videos):
    """The ids the load tests run over: every video the factory expects to load, and every broken one."""
    assert sorted(vid for vid, (_, ok) in videos.items() if ok) == sorted(ok_ids())
    assert sorted(vid for vid, (_, ok) in videos.items() if not ok) == sorted(BROKEN_REASONS)


@pytest.mark.parametrize("video_id", ok_ids())
def test_ok_videos_load(videos, video_id):
    path = videos[video_id][0]
    loaded = load_video(path, SMALL, video_id=video_id)
    check_loaded(loaded, SMALL)
    # 64 tokens per frame, give or take qwen-vl-utils' rounding to multiples of 32 pixels
    h, w = loaded.frames.shape[2:]
    assert 40 <= (h // 32) * (w // 32) <= 90
    if HAVE_DECORD:
        expected = "pyav" if video_id in DECORD_FAILS or video_id == "mpeg2_mpg" else "decord"
        assert loaded.reader == expected
        if video_id in DECORD_FAILS:
            assert "decord" in loaded.errors


@pytest.mark.parametrize("video_id", ok_ids())
def test_pyav_reader_alone(videos, video_id):
    loaded = load_video(videos[video_id][0], SMALL, readers=("pyav",))
    check_loaded(loaded, SMALL)
    assert loaded.reader == "pyav" and loaded.metadata["video_backend"] == "pyav"


def test_pyav_without_metadata_errors_still_reads(videos, monkeypatch):
    """PyAV 19 dropped ``av.open``'s ``metadata_errors`` (a TypeError on every call): the probe and the
    PyAV reader then open files without it and give the same frames as with the pinned PyAV."""
    import av

    path = videos["long_40s"][0]
    expected = load_video(path, SMALL, readers=["pyav"])
    original = av.open

    def open_without_metadata_errors(*args, **kwargs):
        if "metadata_errors" in kwargs:
            raise TypeError("open() got an unexpected keyword argument 'metadata_errors'")
        return original(*args, **kwargs)

    monkeypatch.setattr(av, "open", open_without_metadata_errors)
    got = load_video(path, SMALL, readers=["pyav"])
    assert got.reader == "pyav" and torch.equal(got.frames, expected.frames)


def test_unresized_frames_resize_to_what_load_video_gives(videos):
    """load_video(resize=False) keeps the sampled frames as decoded with the size qwen-vl-utils would
    give them; resized() (what a GPU rerank job does on the device) gives load_video's frames exactly."""
    path = videos["long_40s"][0]
    whole = load_video(path, SMALL)
    raw = load_video(path, SMALL, resize=False)
    assert raw.resize_to == tuple(whole.frames.shape[2:]) and raw.frames.shape[2:] != whole.frames.shape[2:]
    assert raw.visual_tokens == whole.visual_tokens and raw.metadata == whole.metadata
    done = raw.resized()
    assert done.resize_to is None and torch.equal(done.frames, whole.frames)
    assert whole.resized() is whole


def test_expected_sampling(videos):
    long = load_video(videos["long_40s"][0], SMALL)
    assert long.num_frames == 8 and long.metadata["total_num_frames"] == 400  # 80 at 2 fps, capped
    assert long.metadata["frames_indices"][0] == 0 and long.metadata["frames_indices"][-1] == 399
    short = load_video(videos["h264_mp4"][0], SMALL)  # 30 frames at 10 fps: 3 s → 6 frames
    assert short.metadata["frames_indices"] == [0, 6, 12, 17, 23, 29]
    assert short.sample_fps == pytest.approx(2.0) and short.metadata["duration"] == pytest.approx(3.0)
    odd = load_video(videos["fps_7_3"][0], SMALL)
    assert odd.metadata["fps"] == pytest.approx(7.3) and odd.metadata["total_num_frames"] == 22
    ntsc = load_video(videos["ntsc_29_97"][0], SMALL)
    assert ntsc.metadata["fps"] == pytest.approx(30000 / 1001)
    assert ntsc.num_frames == 4  # 1.5 s at 2 fps = 3, raised to min_frames 4
    wide = load_video(videos["wide_200x48"][0], SMALL)
    assert wide.frames.shape[3] > 3 * wide.frames.shape[2]  # aspect ratio kept


def test_single_frame_is_repeated(videos):
    for readers in (("pyav",),) + ((("decord",),) if HAVE_DECORD else ()):
        loaded = load_video(videos["single_frame"][0], SMALL, readers=readers)
        assert loaded.num_frames == 2 and loaded.metadata["frames_indices"] == [0, 0]
        assert torch.equal(loaded.frames[0], loaded.frames[1])


def test_paper_settings_give_about_128_tokens_per_frame(videos):
    loaded = load_video(videos["h264_mp4"][0], VideoSettings.paper())
    h, w = loaded.frames.shape[2:]
    assert 110 <= (h // 32) * (w // 32) <= 150
    assert loaded.visual_tokens == loaded.num_frames // 2 * (h // 32) * (w // 32)


@pytest.mark.parametrize("video_id", sorted(BROKEN_REASONS))
@pytest.mark.parametrize("readers", [None, ("pyav",)])
def test_broken_videos_raise_with_reason(videos, video_id, readers):
    path, ok = videos[video_id]
    assert not ok
    with pytest.raises(VideoError) as info:
        load_video(path, SMALL, readers=readers, video_id=video_id)
    err = info.value
    assert err.reason.startswith(BROKEN_REASONS[video_id]), err.reason
    assert err.video_id == video_id and err.path == str(path)
    assert video_id in str(err) and err.reason in str(err)


def test_missing_file(tmp_path):
    with pytest.raises(VideoError) as info:
        load_video(tmp_path / "nope.mp4", SMALL)
    assert info.value.reason == "missing file"


def test_video_error_pickles():
    import pickle

    err = pickle.loads(pickle.dumps(VideoError("empty file", "v1", "/x/v1.mp4")))
    assert (err.reason, err.video_id, err.path) == ("empty file", "v1", "/x/v1.mp4")


def test_unknown_reader(videos):
    with pytest.raises(ValueError, match="unknown video reader"):
        load_video(videos["h264_mp4"][0], SMALL, readers=("torchvision",))


# ----------------------------------------------------------------------------- readers agree


def nearest_pattern(frame: "torch.Tensor", candidates, height, width, ele) -> int:
    """The index t whose frame_pattern(t), resized like the video, is closest to ``frame``."""
    best = None
    for t in candidates:
        pattern = torch.from_numpy(frame_pattern(t, height, width)).permute(2, 0, 1)[None]
        resized = V.resize_like_qwen(pattern.repeat(2, 1, 1, 1), ele)[0]
        distance = (resized.float() - frame.float()).abs().mean().item()
        if best is None or distance < best[0]:
            best = (distance, t)
    return best[1]


@pytest.mark.parametrize("video_id", ["h264_mp4", "vp9_webm", "hevc_mkv", "mpeg4_avi", "vfr_mkv", "mpeg2_mpg"])
def test_sampled_frames_are_the_right_frames(videos, video_id):
    import av

    path = videos[video_id][0]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        height, width = stream.height, stream.width
    loaded = load_video(path, SMALL)
    ele = SMALL.qwen_element(path)
    total = loaded.metadata["total_num_frames"]
    found = [nearest_pattern(f, range(total), height, width, ele) for f in loaded.frames]
    assert found == loaded.metadata["frames_indices"]


@needs_decord
@pytest.mark.parametrize("video_id", ["h264_mp4", "vp9_webm", "hevc_mkv", "mpeg4_avi", "odd_33x17", "long_40s",
                                      "vfr_mkv", "fps_7_3", "gray_mkv", "h264_10bit_mp4"])
def test_decord_and_pyav_agree(videos, video_id):
    path = videos[video_id][0]
    a = load_video(path, SMALL, readers=("decord",))
    b = load_video(path, SMALL, readers=("pyav",))
    assert (a.reader, b.reader) == ("decord", "pyav")
    for key in ("frames_indices", "total_num_frames"):
        assert a.metadata[key] == b.metadata[key]
    assert a.metadata["fps"] == pytest.approx(b.metadata["fps"])
    assert a.sample_fps == pytest.approx(b.sample_fps)
    assert a.frames.shape == b.frames.shape
    diff = (a.frames.float() - b.frames.float()).abs()
    assert diff.mean().item() < 2.0, diff.mean().item()  # identical on 8-bit files; 10-bit ~1


@needs_decord
@pytest.mark.parametrize("video_id", ["h264_mp4", "wide_200x48", "long_40s"])
def test_decord_path_equals_qwen_fetch_video(videos, video_id, monkeypatch):
    """The primary path gives exactly what qwen_vl_utils.fetch_video gives with its decord reader."""
    from qwen_vl_utils import vision_process as vp

    monkeypatch.setattr(vp, "get_video_reader_backend", lambda: "decord")
    path = videos[video_id][0]
    for settings in (SMALL, VideoSettings.paper()):
        ours = load_video(path, settings, readers=("decord",))
        theirs, meta = vp.fetch_video(settings.qwen_element(path), image_patch_size=16, return_video_metadata=True)
        assert torch.equal(ours.frames.float(), theirs)
        assert {k: ours.metadata[k] for k in meta} == meta


def test_fallback_when_decord_fails(videos, monkeypatch, caplog):
    def broken(ele):
        raise RuntimeError("simulated decord failure")

    monkeypatch.setitem(V._READER_FUNCTIONS, "decord", broken)
    with caplog.at_level(logging.WARNING, logger="rankvideo.video"):
        loaded = load_video(videos["h264_mp4"][0], SMALL)
    assert loaded.reader == "pyav" and loaded.errors == {"decord": "simulated decord failure"}
    assert "simulated decord failure" in caplog.text
    check_loaded(loaded, SMALL)
    # no reader works: the reason names each reader's failure
    monkeypatch.setitem(V._READER_FUNCTIONS, "pyav", broken)
    with pytest.raises(VideoError) as info:
        load_video(videos["h264_mp4"][0], SMALL)
    assert info.value.reason.startswith("not a video / cannot be decoded")
    assert "decord: simulated" in info.value.reason and "pyav: simulated" in info.value.reason


def test_no_environment_dependence(videos, monkeypatch):
    """FORCE_QWENVL_VIDEO_READER (read by qwen-vl-utils at import) does not change our reader."""
    monkeypatch.setenv("FORCE_QWENVL_VIDEO_READER", "torchvision")
    loaded = load_video(videos["h264_mp4"][0], SMALL)
    assert loaded.reader == ("decord" if HAVE_DECORD else "pyav")


# ----------------------------------------------------------------------------- decode counter


def test_decode_counter(videos, caplog):
    V.reset_decode_count()
    path = videos["h264_mp4"][0]
    with caplog.at_level(logging.DEBUG, logger="rankvideo.video"):
        load_video(path, SMALL)
    assert V.decode_count() == 1 and V.decode_count(path) == 1
    assert f"decoded {path}" in caplog.text
    load_video(path, SMALL)
    load_video(videos["h264_mov"][0], SMALL)  # decord fails, PyAV reads it: one decode
    assert V.decode_count(path) == 2 and V.decode_count(videos["h264_mov"][0]) == 1
    assert V.decode_count() == 3
    with pytest.raises(VideoError):
        load_video(videos["empty"][0], SMALL)  # refused by the probe: never decoded
    with pytest.raises(VideoError):
        load_video(videos["truncated_faststart"][0], SMALL)  # decoding tried and failed: counted
    assert V.decode_count() == 4
    assert V.decode_counts() == {str(Path(path).absolute()): 2, str(Path(videos["h264_mov"][0]).absolute()): 1,
                                 str(Path(videos["truncated_faststart"][0]).absolute()): 1}
    V.reset_decode_count()
    assert V.decode_count() == 0


# ----------------------------------------------------------------------------- failure log


def test_failure_log_resume_without_duplicates(tmp_path):
    log = FailureLog(tmp_path)  # a folder: <folder>/failures.jsonl
    assert log.path == tmp_path / "failures.jsonl" and len(log) == 0
    assert log.record("v1", "/videos/v1.mp4", "empty file")
    assert not log.record("v1", "/videos/v1.mp4", "empty file")
    assert log.record_error(VideoError("no video stream", "v2", "/videos/v2.mp4"))
    lines = log.path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [
        {"video_id": "v1", "path": "/videos/v1.mp4", "reason": "empty file"},
        {"video_id": "v2", "path": "/videos/v2.mp4", "reason": "no video stream"}]

    resumed = FailureLog.in_dir(tmp_path)
    assert resumed.ids == {"v1", "v2"} and "v1" in resumed
    assert not resumed.record("v2", "/videos/v2.mp4", "no video stream")
    assert resumed.record("v3", None, "missing file")
    assert len(log.path.read_text(encoding="utf-8").splitlines()) == 3

    # a job killed mid-write leaves a torn last line: dropped on open, appends start on a new line
    with open(log.path, "a", encoding="utf-8") as handle:
        handle.write('{"video_id": "v4", "pa')
    torn = FailureLog(log.path)
    assert torn.ids == {"v1", "v2", "v3"}
    assert torn.record("v4", "/videos/v4.mp4", "truncated: x")
    records = [json.loads(line) for line in log.path.read_text(encoding="utf-8").splitlines()]
    assert [r["video_id"] for r in records] == ["v1", "v2", "v3", "v4"]

    bad = tmp_path / "bad" / "failures.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"video_id": "a", "path": null, "reason": "x"}\nnot json\n{"video_id": "b"}\n', encoding="utf-8")
    with pytest.raises(FormatError):
        FailureLog(bad)
    with pytest.raises(ValueError):
        log.record_error(VideoError("empty file"))


def test_failure_log_with_loader(videos, tmp_path):
    """The way a job uses it: resolve, load, record failures."""
    folder = Path(videos["h264_mp4"][0]).parent
    resolver = VideoResolver(folder)
    log = FailureLog.in_dir(tmp_path / "out")
    ok = []
    for video_id in ["h264_mp4", "empty", "text", "nonexistent", "../etc"]:
        try:
            ok.append(load_video(resolver.resolve(video_id), SMALL, video_id=video_id).video_id)
        except VideoError as err:
            assert err.video_id == video_id
            log.record_error(err)
    assert ok == ["h264_mp4"]
    reasons = {r["video_id"]: r["reason"] for r in FailureLog.in_dir(tmp_path / "out").records()}
    assert reasons["empty"] == "empty file" and reasons["../etc"].startswith("unsafe id")
    assert reasons["nonexistent"].startswith("missing file")
    assert reasons["text"].startswith("not a video")
