"""A folder of small generated test videos, good and broken (not a test module).

``make_test_videos(folder)`` writes every video with PyAV and returns
``{video_id: (path, expected_ok)}``. Every file is small and deterministic (single-threaded,
bit-exact encoders; same call, same bytes for the codecs that allow it) and the whole set takes a
few seconds to write. Frames show smooth colour gradients that move with the frame number plus a
bright vertical bar at ``x = t mod width``, so a decoded frame can be matched to its index.
"""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np


def frame_pattern(t: int, height: int, width: int) -> np.ndarray:
    """The RGB frame number ``t`` of every generated video (uint8, height x width x 3)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = ((x * 200.0 / max(width - 1, 1)) + 6.0 * t) % 256
    frame[..., 1] = 30.0 + y * 180.0 / max(height - 1, 1)
    frame[..., 2] = (90 + 5 * t) % 256
    bar = t % width
    frame[:, bar : bar + 2, :] = 250
    return frame


def encode(path: Path, *, codec: str, width: int, height: int, n_frames: int, rate, fmt: str | None = None,
           pix_fmt: str = "yuv420p", options: dict | None = None, container_options: dict | None = None,
           pts: list[int] | None = None, time_base: Fraction | None = None) -> Path:
    """Encode ``frame_pattern`` frames 0..n_frames-1 into ``path`` with PyAV."""
    import av

    if codec == "libsvtav1":  # SVT-AV1 reads its log level from the environment; keep it quiet
        os.environ.setdefault("SVT_LOG", "1")
    path.parent.mkdir(parents=True, exist_ok=True)
    opts = {"fflags": "+bitexact"}
    opts.update(container_options or {})
    with av.open(str(path), mode="w", format=fmt, options=opts) as container:
        stream = container.add_stream(codec, rate=rate, options=dict(options or {}))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        if time_base is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        for t in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(t, height, width), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[t], time_base
            for packet in stream.encode(frame.reformat(format=pix_fmt) if pix_fmt != "yuv420p" else frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def encode_audio_only(path: Path, fmt: str, codec: str, seconds: float = 1.0, rate: int = 16000) -> Path:
    """A file with one audio stream (a sine tone) and no video stream."""
    import av

    with av.open(str(path), mode="w", format=fmt, options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.layout = "mono"
        samples = int(seconds * rate)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / rate)).astype(np.float32)
        frame_size = stream.codec_context.frame_size or 1024
        fmt_name = stream.codec_context.format.name
        for start in range(0, samples, frame_size):
            chunk = tone[start : start + frame_size]
            if len(chunk) < frame_size and frame_size > 1:
                chunk = np.pad(chunk, (0, frame_size - len(chunk)))
            if fmt_name.startswith("s16"):
                data = (chunk * 32767).astype(np.int16)[None, :]
            else:
                data = chunk[None, :]
            frame = av.AudioFrame.from_ndarray(data, format=fmt_name, layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


X264 = {"preset": "veryfast", "crf": "18", "threads": "1"}
X265 = {"preset": "ultrafast", "crf": "20", "x265-params": "log-level=error:pools=none:frame-threads=1"}
VP9 = {"deadline": "realtime", "cpu-used": "8", "crf": "20", "b": "0", "threads": "1", "row-mt": "0"}

#: the good videos: id → encode() keyword arguments (file name is id + extension)
GOOD = {
    "h264_mp4": dict(ext="mp4", codec="libx264", width=64, height=48, n_frames=30, rate=10, options=X264),
    "vp9_webm": dict(ext="webm", codec="libvpx-vp9", width=64, height=48, n_frames=16, rate=8, options=VP9),
    "hevc_mkv": dict(ext="mkv", codec="libx265", width=64, height=48, n_frames=12, rate=6, options=X265),
    "mpeg4_avi": dict(ext="avi", codec="mpeg4", width=64, height=48, n_frames=20, rate=10, options={"qscale": "3", "threads": "1"}),
    "h264_mov": dict(ext="mov", codec="libx264", width=48, height=64, n_frames=14, rate=7, options=X264),
    "odd_33x17": dict(ext="mp4", codec="libx264", width=33, height=17, n_frames=12, rate=4, pix_fmt="yuv444p", options=X264),
    "wide_200x48": dict(ext="mp4", codec="libx264", width=200, height=48, n_frames=10, rate=5, options=X264),
    "gray_mkv": dict(ext="mkv", codec="libx264", width=64, height=64, n_frames=10, rate=5, pix_fmt="gray", options=X264),
    "gray_ffvhuff_avi": dict(ext="avi", codec="ffvhuff", width=40, height=30, n_frames=8, rate=4, pix_fmt="gray", options={"threads": "1"}),
    "h264_10bit_mp4": dict(ext="mp4", codec="libx264", width=64, height=48, n_frames=10, rate=5, pix_fmt="yuv420p10le", options=X264),
    "yuv444_mp4": dict(ext="mp4", codec="libx264", width=64, height=48, n_frames=10, rate=5, pix_fmt="yuv444p", options=X264),
    "single_frame": dict(ext="mp4", codec="libx264", width=64, height=48, n_frames=1, rate=1, options=X264),
    "long_40s": dict(ext="mp4", codec="libx264", width=32, height=32, n_frames=400, rate=10, options=X264),
    "fps_7_3": dict(ext="mp4", codec="libx264", width=64, height=48, n_frames=22, rate=Fraction(73, 10), options=X264),
    "ntsc_29_97": dict(ext="mp4", codec="libx264", width=64, height=48, n_frames=45, rate=Fraction(30000, 1001), options=X264),
    "av1_mp4": dict(ext="mp4", codec="libsvtav1", width=64, height=64, n_frames=10, rate=5, options={"preset": "12", "crf": "35", "svtav1-params": "lp=1"}),
    "mpeg2_mpg": dict(ext="mpg", codec="mpeg2video", width=64, height=48, n_frames=12, rate=25, fmt="mpeg", options={"qscale": "3"}),
}

#: frame-rate of the variable-frame-rate video: irregular timestamps in a 1/1000 time base
VFR_PTS = [0, 100, 150, 400, 420, 700, 1000, 1050, 1100, 1500, 1900, 2000]


def make_test_videos(folder: str | Path) -> dict[str, tuple[Path, bool]]:
    """Write the assorted test videos into ``folder``; {video_id: (path, expected_ok)}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    videos: dict[str, tuple[Path, bool]] = {}
    for video_id, spec in GOOD.items():
        spec = dict(spec)
        path = folder / f"{video_id}.{spec.pop('ext')}"
        videos[video_id] = (encode(path, **spec), True)

    vfr = folder / "vfr_mkv.mkv"
    encode(vfr, codec="libx264", width=64, height=48, n_frames=len(VFR_PTS), rate=10, options=X264,
           pts=VFR_PTS, time_base=Fraction(1, 1000))
    videos["vfr_mkv"] = (vfr, True)

    # ---- broken ones
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    videos["empty"] = (empty, False)

    # an mp4 as a plain muxer writes it (index "moov" at the end), cut in half: no index at all
    whole = encode(folder / ".whole.mp4", codec="libx264", width=64, height=48, n_frames=30, rate=10, options=X264)
    data = whole.read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    videos["truncated"] = (folder / "truncated.mp4", False)
    # a "fast start" mp4 (index first) cut in half: the index promises frames the file lacks
    whole_fs = encode(folder / ".whole_fs.mp4", codec="libx264", width=64, height=48, n_frames=30, rate=10,
                      options=X264, container_options={"movflags": "+faststart"})
    data = whole_fs.read_bytes()
    (folder / "truncated_faststart.mp4").write_bytes(data[: len(data) // 2])
    videos["truncated_faststart"] = (folder / "truncated_faststart.mp4", False)
    whole.unlink()
    whole_fs.unlink()

    text = folder / "text.mp4"
    text.write_text("This is not a video.\n" * 20, encoding="utf-8")
    videos["text"] = (text, False)

    videos["audio_only"] = (encode_audio_only(folder / "audio_only.mp4", "mp4", "aac"), False)
    wav = encode_audio_only(folder / ".tone.wav", "wav", "pcm_s16le")
    shutil.move(wav, folder / "wav_named.mp4")
    videos["wav_named"] = (folder / "wav_named.mp4", False)
    return videos


if __name__ == "__main__":  # pragma: no cover - manual inspection
    import sys
    import time

    start = time.time()
    for vid, (p, ok) in make_test_videos(sys.argv[1]).items():
        print(f"{vid:22s} {'ok ' if ok else 'BAD'} {p.stat().st_size:7d} {p}")
    print(f"{time.time() - start:.2f} s")


def multivent_path(folder: str | Path, video_id: str) -> Path:
    """Where MultiVENT 2.0 keeps a numeric video id: ``{folder}/{(id//100)+1:06d}/{id}.mp4``."""
    return Path(folder) / f"{int(video_id) // 100 + 1:06d}" / f"{video_id}.mp4"


def make_multivent_tree(folder: str | Path, video_ids, n_frames: int = 12, rate: int = 4) -> dict[str, Path]:
    """Small H.264 videos at their MultiVENT 2.0 paths; {video_id: path}."""
    return {vid: encode(multivent_path(folder, vid), codec="libx264", width=64, height=48, n_frames=n_frames,
                        rate=rate, options=X264)
            for vid in video_ids}
