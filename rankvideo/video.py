"""Finding video files and turning them into the frames Qwen3-VL sees.

- :class:`VideoSettings`: how a video is sampled and resized (frame rate, frame count, pixels per
  frame). :meth:`VideoSettings.paper` is the published RANKVIDEO setting: 2 fps, at most 32 frames,
  128 visual tokens per frame (``min_pixels = max_pixels = 128*32*32``,
  ``total_pixels = 32*128*32*32``), patch 16 (Qwen3-VL).
- :class:`VideoResolver`: video id → file, for the ``flat``, ``multivent`` and ``index`` layouts.
- :func:`load_video`: decode, sample and resize one video exactly as qwen-vl-utils does
  (``fetch_video`` with its decord reader), with a PyAV reader as fallback for files decord cannot
  read. Every failure is a :class:`VideoError` with a short ``reason``.
- :class:`FailureLog`: ``failures.jsonl`` of the videos a job could not use; no duplicates on resume.

Readers. qwen-vl-utils chooses its reader once per process (``FORCE_QWENVL_VIDEO_READER`` is read at
import time and the choice is cached), and on any reader error it falls back to its torchvision reader,
which is broken on torchvision >= 0.29. So this module never calls ``fetch_video`` for files: it calls
qwen-vl-utils' decord reader function (``_read_video_decord``) directly and then applies the same
resize as ``fetch_video`` (same helpers, same constants; a test checks the result is identical to
``fetch_video``'s). The PyAV reader counts frames the way decord does (one per video packet), samples the
same indices with qwen-vl-utils' own ``calculate_video_frame_range``/``smart_nframes`` and resizes the
same way, so on ordinary files both readers give the same indices and shapes and nearly the same pixels.
No environment variable is read or changed. Exception: for MPEG program/transport streams (``.mpg``,
``.ts``; :data:`PYAV_FIRST_FORMATS`) decord's seeking was seen to return wrong frames, differently from
run to run, so PyAV goes first there.

decord 0.6.0 failures seen (PyAV reads all of them): AV1 (its bundled FFmpeg has no AV1 decoder:
"cannot find video stream"), and some frame widths (16, 24, 48, 72 px seen) where its frame copy fails
("DECORDArrayCopyFromTo: The size must exactly match").

Deviation from qwen-vl-utils: a video of fewer than 2 frames (a single image encoded as video) makes
``smart_nframes`` raise; here its one frame is repeated to the 2 frames Qwen3-VL needs
(``frames_indices == [0, 0]``).

Safety. Before any reader runs, a cheap PyAV probe (headers only) checks that the file exists, is not
empty, opens as a media file and has a video stream, so that errors have precise reasons and decord
never sees text files, empty files or audio-only files. (decord 0.6.0 was not seen to crash the process
on any of the broken test files; it raises. The probe is a guard, not a workaround for a seen crash.)

Decode counter: :func:`decode_count` tells how many times :func:`load_video` decoded (or tried to
decode) each file since :func:`reset_decode_count`; a file that fails the probe is not counted, a
file read by the fallback after decord failed is counted once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from rankvideo.data.formats import JsonlAppender, id_problem, read_video_index

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

#: file extensions tried, in this order, for the ``flat`` layout
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov", "m4v", "mpg", "mpeg", "flv", "ts", "3gp", "ogv", "wmv")
LAYOUTS = ("flat", "multivent", "index", "auto")
#: readers tried by :func:`load_video`, in this order
READERS = ("decord", "pyav")
#: containers (PyAV/FFmpeg format names) where decord's random access is not reliable (seen: MPEG-PS
#: ``.mpg`` returning a wrong frame for an index, differently from run to run): PyAV, which decodes
#: sequentially, goes first there when ``readers`` is not given
PYAV_FIRST_FORMATS = frozenset({"mpeg", "mpegts", "mpegvideo", "mpeg1video", "mpeg2video", "h264", "hevc"})

# qwen-vl-utils 0.0.14 constants, repeated here so that building settings needs no torch import
_SPATIAL_MERGE_SIZE = 2
_FRAME_FACTOR = 2
_VIDEO_MIN_TOKEN_NUM = 128


# ----------------------------------------------------------------------------- errors


class VideoError(Exception):
    """A video cannot be used. ``reason`` is short and human readable, e.g. ``"missing file"``,
    ``"empty file"``, ``"no video stream"``, ``"truncated: ..."``,
    ``"not a video / cannot be decoded: ..."``, ``"unsafe id"``."""

    def __init__(self, reason: str, video_id: str | None = None, path: PathLike | None = None):
        self.reason = reason
        self.video_id = None if video_id is None else str(video_id)
        self.path = None if path is None else str(path)
        super().__init__(reason, self.video_id, self.path)

    def __str__(self) -> str:
        who = []
        if self.video_id is not None:
            who.append(f"video {self.video_id!r}")
        if self.path is not None:
            who.append(f"({self.path})" if who else self.path)
        return f"{' '.join(who)}: {self.reason}" if who else self.reason

    def record(self) -> dict:
        """The failure as a :class:`FailureLog` record."""
        return {"video_id": self.video_id, "path": self.path, "reason": self.reason}


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class VideoSettings:
    """Sampling and resizing of a video, in qwen-vl-utils' terms.

    ``fps``: frames sampled per second of video; ``min_frames``/``max_frames``: bounds on the number of
    sampled frames (qwen-vl-utils rounds them to even numbers; a video never yields more frames than it
    has). ``min_pixels``/``max_pixels``: bounds on the pixels of each resized frame; ``total_pixels``:
    budget for all frames together (qwen-vl-utils caps a frame at ``2 * total_pixels / frames``).
    ``None`` means qwen-vl-utils' default. A frame of ``h x w`` pixels gives
    ``(h / (2*patch)) * (w / (2*patch))`` visual tokens.

    The default ``min_frames`` is qwen-vl-utils' own (4), which the published system used implicitly.
    """

    fps: float = 2.0
    max_frames: int = 32
    min_frames: int = 4
    min_pixels: int | None = 128 * 32 * 32
    max_pixels: int | None = 128 * 32 * 32
    total_pixels: int | None = 32 * 128 * 32 * 32
    image_patch_size: int = 16

    def __post_init__(self):
        if not (isinstance(self.fps, (int, float)) and not isinstance(self.fps, bool) and self.fps > 0
                and math.isfinite(self.fps)):
            raise ValueError(f"video fps must be a positive number, got {self.fps!r}")
        for name in ("max_frames", "min_frames", "image_patch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"video {name} must be a positive integer, got {value!r}")
        if self.max_frames < _FRAME_FACTOR:
            raise ValueError(f"video max_frames must be at least {_FRAME_FACTOR}, got {self.max_frames}")
        if self.min_frames > self.max_frames:
            raise ValueError(f"video min_frames ({self.min_frames}) exceeds max_frames ({self.max_frames})")
        for name in ("min_pixels", "max_pixels", "total_pixels"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"video {name} must be a positive integer or null, got {value!r}")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise ValueError(f"video min_pixels ({self.min_pixels}) exceeds max_pixels ({self.max_pixels})")

    @property
    def factor(self) -> int:
        """Side of one visual token in pixels (patch size x spatial merge): 32 for Qwen3-VL."""
        return self.image_patch_size * _SPATIAL_MERGE_SIZE

    @classmethod
    def paper(cls) -> "VideoSettings":
        """The published RANKVIDEO setting: 2 fps, <= 32 frames, 128 tokens per frame, patch 16."""
        return cls.with_tokens(fps=2.0, max_frames=32, tokens_per_frame=128)

    @classmethod
    def from_config(cls, video: dict) -> "VideoSettings":
        """A config's ``video`` section ``{fps, max_frames, tokens_per_frame}``."""
        return cls.with_tokens(video["fps"], video["max_frames"], video["tokens_per_frame"])

    @classmethod
    def with_tokens(cls, fps: float, max_frames: int, tokens_per_frame: int, **others) -> "VideoSettings":
        """Settings with ``min_pixels = max_pixels = tokens * factor²`` and
        ``total_pixels = max_frames * tokens * factor²`` (the paper's way of fixing tokens per frame)."""
        patch = others.get("image_patch_size", cls.image_patch_size)
        pixels = int(tokens_per_frame) * (patch * _SPATIAL_MERGE_SIZE) ** 2
        others.setdefault("min_pixels", pixels)
        others.setdefault("max_pixels", pixels)
        others.setdefault("total_pixels", int(max_frames) * pixels)
        return cls(fps=fps, max_frames=max_frames, **others)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "VideoSettings":
        """Settings from a config mapping. Keys: the fields of this class, or ``tokens_per_frame``
        (with ``fps``/``max_frames``) as a short form of the three pixel bounds. Missing keys take the
        paper's values; unknown keys are errors."""
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names - {"tokens_per_frame"})
        if unknown:
            raise ValueError(f"unknown video setting(s): {', '.join(unknown)} (known: {', '.join(sorted(names | {'tokens_per_frame'}))})")
        paper = cls.paper()
        tokens = values.pop("tokens_per_frame", None)
        fps, max_frames = values.pop("fps", paper.fps), values.pop("max_frames", paper.max_frames)
        if tokens is not None:
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
                raise ValueError(f"video tokens_per_frame must be a positive integer, got {tokens!r}")
            return cls.with_tokens(fps, max_frames, tokens, **values)
        merged = {**dataclasses.asdict(paper), **values, "fps": fps, "max_frames": max_frames}
        # the paper's total_pixels belongs to its 32 frames: rescale when only max_frames changed
        if "total_pixels" not in values and merged["max_pixels"] == paper.max_pixels and paper.total_pixels:
            merged["total_pixels"] = int(max_frames) * paper.max_pixels
        return cls(**merged)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def qwen_element(self, path: PathLike) -> dict:
        """The qwen-vl-utils video element (``{"video": path, "fps": ..., ...}``) for ``path``.

        ``min_pixels`` is always set: qwen-vl-utils asserts when ``max_pixels`` is below its default
        ``min_pixels``, so a ``max_pixels`` alone lowers ``min_pixels`` to it."""
        element: dict[str, Any] = {"video": str(path), "fps": float(self.fps),
                                   "min_frames": self.min_frames, "max_frames": self.max_frames}
        min_pixels = self.min_pixels
        if min_pixels is None:
            min_pixels = _VIDEO_MIN_TOKEN_NUM * self.factor ** 2
            if self.max_pixels is not None:
                min_pixels = min(min_pixels, self.max_pixels)
        element["min_pixels"] = min_pixels
        if self.max_pixels is not None:
            element["max_pixels"] = self.max_pixels
        if self.total_pixels is not None:
            element["total_pixels"] = self.total_pixels
        return element


# ----------------------------------------------------------------------------- resolving ids


class VideoResolver:
    """Video id → video file.

    Layouts:

    - ``flat``: ``{video_dir}/{id}.{ext}``, trying :data:`VIDEO_EXTENSIONS` in order (lower case
      first, then upper case); the first existing file wins.
    - ``multivent``: ``{video_dir}/{(int(id)//100)+1:06d}/{id}.mp4`` (MultiVENT 2.0); ids must be
      ASCII digits.
    - ``index``: a ``video_id<TAB>path`` TSV. A relative path is relative to ``video_dir`` when one is
      given, else to the folder of the TSV. Paths in the index are trusted (they may point anywhere).
      :meth:`scan` makes one from the video files found under a folder instead of a TSV.
    - ``auto`` (the CLIs' default without ``--video-layout``): ``flat``, then, for a numeric id,
      ``multivent``; the first existing file wins. So a MultiVENT 2.0 folder needs no flag (the
      reference resolves that layout by itself) and a flat folder still works.

    In every layout (the index too: callers name output files after ids) ids that could leave a
    folder or are too long for a file name (:func:`formats.id_problem`: empty, ``.``, ``..``,
    containing ``/``, ``\\``, NUL or other control characters, over ``MAX_ID_BYTES``) are refused with
    ``VideoError(reason="unsafe id: ...")``; for ``flat`` and ``multivent`` the joined path is checked to stay inside
    ``video_dir`` lexically. Symbolic links are *not* resolved for that check: a symlink placed inside
    the video folder (dataset folders are often symlink farms into shared storage) is the data owner's
    choice and is followed; ids alone can never escape.

    A file that does not exist (or is not a regular file) raises ``VideoError(reason="missing file")``.
    """

    def __init__(self, video_dir: PathLike | None = None, layout: str = "flat", index: PathLike | None = None,
                 paths: Mapping[str, PathLike] | None = None):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown video layout {layout!r} (choose one of {', '.join(LAYOUTS)})")
        self.layout = layout
        self.video_dir = None if video_dir is None else Path(video_dir)
        self.index_path = None if index is None else Path(index)
        self._index: dict[str, str] | None = None
        if layout == "index":
            if paths is not None:  # :meth:`scan`; relative paths are relative to video_dir
                self._index = {str(k): str(v) for k, v in paths.items()}
                self._base = self.video_dir if self.video_dir is not None else Path(".")
            elif self.index_path is None:
                raise ValueError("video layout 'index' needs an index TSV (video_id<TAB>path)")
            else:
                self._index = read_video_index(self.index_path)
                self._base = self.video_dir if self.video_dir is not None else self.index_path.parent
        elif self.video_dir is None:
            raise ValueError(f"video layout {layout!r} needs a video folder")

    @classmethod
    def from_config(cls, videos: Mapping[str, Any]) -> "VideoResolver":
        """From the config's ``dataset.videos`` mapping ``{dir, layout, index}``."""
        return cls(video_dir=videos.get("dir"), layout=videos.get("layout", "auto"), index=videos.get("index"))

    @classmethod
    def scan(cls, root: PathLike) -> "VideoResolver":
        """The video files under ``root`` at any depth (:data:`VIDEO_EXTENSIONS`, any case), each by its
        file name without the extension, as the reference's captioner finds them. Hidden files and
        folders (name starting with ``.``) are left out; symbolic links to folders are not followed.
        Two files of one id are a ValueError naming both."""
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: video folder not found")
        extensions = {"." + ext for ext in VIDEO_EXTENSIONS}
        found: dict[str, Path] = {}
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            for name in sorted(files):
                path = Path(folder) / name
                if name.startswith(".") or path.suffix.lower() not in extensions:
                    continue
                if path.stem in found:
                    raise ValueError(f"video id {path.stem!r} is two files under {root}: {found[path.stem]} and {path}; "
                                     "keep one, or list the videos to use in --video-index (video_id<TAB>path)")
                found[path.stem] = path
        return cls(root, "index", paths={video: path.relative_to(root) for video, path in sorted(found.items())})

    def ids(self) -> list[str] | None:
        """The ids of the index (layout ``index``); ``None`` for the other layouts."""
        return None if self._index is None else list(self._index)

    def candidates(self, video_id: str) -> list[Path]:
        """The paths that :meth:`resolve` would try, in order (no existence check)."""
        video_id = str(video_id)
        problem = id_problem(video_id)  # every layout: callers build output paths from ids too
        if problem:
            raise VideoError(problem, video_id)
        if self.layout == "index":
            if video_id not in self._index:
                raise VideoError(f"not in video index {self.index_path}" if self.index_path is not None else
                                 f"no video file of this name under {self.video_dir}", video_id)
            path = Path(self._index[video_id])
            return [path if path.is_absolute() else self._base / path]
        numeric = video_id.isascii() and video_id.isdigit()
        if self.layout == "multivent" and not numeric:
            raise VideoError("not an integer id (the multivent layout needs numeric ids)", video_id)
        relative = []
        if self.layout in ("flat", "auto"):
            extensions = list(VIDEO_EXTENSIONS) + [ext.upper() for ext in VIDEO_EXTENSIONS]
            relative += [Path(f"{video_id}.{ext}") for ext in extensions]
        if self.layout == "multivent" or (self.layout == "auto" and numeric):
            relative.append(Path(f"{int(video_id) // 100 + 1:06d}") / f"{video_id}.mp4")
        root = os.path.normpath(self.video_dir)
        paths = []
        for rel in relative:
            path = self.video_dir / rel
            if os.path.commonpath([root, os.path.normpath(path)]) != root:  # pragma: no cover - ids are checked
                raise VideoError("unsafe id", video_id, path)
            paths.append(path)
        return paths

    def resolve(self, video_id: str) -> Path:
        """The existing file of ``video_id``; ``VideoError`` if unsafe, unknown or missing."""
        paths = self.candidates(video_id)
        for path in paths:
            if path.is_file():
                return path
        if self.layout == "flat":
            raise VideoError(f"missing file (no {self.video_dir}/{video_id}.{{{','.join(VIDEO_EXTENSIONS)}}})",
                             video_id, paths[0]) from None
        if self.layout == "auto":
            looked = f"{self.video_dir}/{video_id}.{{{','.join(VIDEO_EXTENSIONS)}}}"
            multivent = len(paths) > 2 * len(VIDEO_EXTENSIONS)  # a numeric id: its MultiVENT path was tried last
            if multivent:
                looked += f" nor {paths[-1]}"
            raise VideoError(f"missing file (no {looked}); point --video-dir at the folder that holds the videos, "
                             "or pass --video-index TSV (video_id<TAB>path) for another layout", video_id,
                             paths[-1] if multivent else paths[0]) from None
        raise VideoError("missing file", video_id, paths[0])


# ----------------------------------------------------------------------------- decode counter

_COUNT_LOCK = threading.Lock()
_DECODES: Counter = Counter()


def _count_decode(path: Path) -> None:
    with _COUNT_LOCK:
        _DECODES[str(Path(path).absolute())] += 1


def decode_count(path: PathLike | None = None) -> int:
    """Decodes by :func:`load_video` since the last reset: in all, or of one file."""
    with _COUNT_LOCK:
        if path is None:
            return sum(_DECODES.values())
        return _DECODES.get(str(Path(path).absolute()), 0)


def decode_counts() -> dict[str, int]:
    """{absolute path: decodes} since the last reset."""
    with _COUNT_LOCK:
        return dict(_DECODES)


def add_decode_counts(counts: dict[str, int]) -> None:
    """Add decodes made in another process (a decode worker's :func:`decode_counts`) to this one's."""
    with _COUNT_LOCK:
        _DECODES.update(counts)


def reset_decode_count() -> None:
    with _COUNT_LOCK:
        _DECODES.clear()


# ----------------------------------------------------------------------------- probing


_CPP_LOCATION = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")


def _short(err: BaseException | None, limit: int = 200) -> str:
    """A one-line, bounded message for an exception (without decord's C++ source location)."""
    if err is None:
        return "unknown error"
    text = " ".join(str(err).split()) or type(err).__name__
    return _CPP_LOCATION.sub("", text)[:limit]


def _isobmff_truncation(path: Path) -> str | None:
    """For an ISO-BMFF file (mp4/mov/3gp/m4v) that failed to open: why it looks truncated, or None.

    Walks the top-level boxes: a box running past the end of the file, or no ``moov`` (index) box at
    all after ``ftyp``, is what an interrupted download or copy leaves behind."""
    size = path.stat().st_size
    boxes = []
    with open(path, "rb") as handle:
        position = 0
        while position + 8 <= size:
            handle.seek(position)
            box_size, kind = struct.unpack(">I4s", handle.read(8))
            if not all(32 <= b < 127 for b in kind):
                return None
            if box_size == 1:
                if position + 16 > size:
                    return f"'{kind.decode()}' box header cut short"
                box_size = struct.unpack(">Q", handle.read(8))[0]
            elif box_size == 0:
                box_size = size - position
            if not boxes and kind != b"ftyp":
                return None
            if box_size < 8:
                return None
            boxes.append(kind)
            if position + box_size > size:
                return f"'{kind.decode()}' box cut short ({size - position} of {box_size} bytes)"
            position += box_size
    if boxes and b"moov" not in boxes:
        return "no 'moov' index box (incomplete mp4?)"
    return None


@dataclass
class ProbeInfo:
    """What the header probe found out about a video file."""

    path: str
    size: int
    container: str
    codec: str
    width: int
    height: int
    frames: int  # from the container header; 0 when unknown
    fps: float | None
    duration: float | None


def probe(path: PathLike, video_id: str | None = None) -> ProbeInfo:
    """Cheap checks before decoding (headers only): the file exists, is not empty, opens as media and
    has a video stream. Raises :class:`VideoError` with a precise reason otherwise."""
    import av

    path = Path(path)
    if not path.is_file():
        raise VideoError("missing file", video_id, path)
    size = path.stat().st_size
    if size == 0:
        raise VideoError("empty file", video_id, path)
    try:
        container = _av_open(str(path))
    except Exception as err:  # av.error.FFmpegError and friends
        truncation = _isobmff_truncation(path)
        if truncation:
            raise VideoError(f"truncated: {truncation}", video_id, path) from None
        raise VideoError(f"not a video / cannot be decoded: {_short(err)}", video_id, path) from None
    with container:
        streams = [s for s in container.streams.video
                   if not (int(s.disposition) & int(av.stream.Disposition.attached_pic))]
        if not streams:
            kinds = sorted({s.type for s in container.streams})
            detail = f" (streams: {', '.join(kinds)})" if kinds else ""
            raise VideoError(f"no video stream{detail}", video_id, path)
        stream = streams[0]
        context = stream.codec_context
        if not context.width or not context.height:
            raise VideoError("not a video / cannot be decoded: video stream without a frame size", video_id, path)
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        duration = container.duration / 1e6 if container.duration else None
        return ProbeInfo(str(path), size, container.format.name, context.name, context.width, context.height,
                         int(stream.frames or 0), float(rate) if rate else None, duration)


# ----------------------------------------------------------------------------- readers


def _sample(ele: dict, total_frames: int, video_fps: float) -> tuple[list[int], float]:
    """Frame indices and sample fps, as qwen-vl-utils' readers compute them, plus the short-video
    case (< 2 frames) that qwen-vl-utils rejects: the single frame is repeated."""
    import torch
    from qwen_vl_utils import vision_process as vp

    start, end, count = vp.calculate_video_frame_range(ele, total_frames, video_fps)
    if count < vp.FRAME_FACTOR:
        nframes = vp.FRAME_FACTOR
        indices = [start] * nframes
    else:
        nframes = vp.smart_nframes(ele, total_frames=count, video_fps=video_fps)
        indices = torch.linspace(start, end, nframes).round().long().tolist()
    return indices, nframes / max(count, 1e-6) * video_fps


def _read_decord(ele: dict):
    """qwen-vl-utils' decord reader; videos of fewer than 2 frames are read here (see module doc)."""
    from qwen_vl_utils import vision_process as vp

    try:
        return vp._read_video_decord(ele)
    except ValueError as err:
        if "nframes should in interval" not in str(err):
            raise
    import decord
    import torch

    reader = decord.VideoReader(ele["video"])
    total, fps = len(reader), reader.get_avg_fps()
    indices, sample_fps = _sample(ele, total, fps)
    video = torch.from_numpy(reader.get_batch(indices).asnumpy()).permute(0, 3, 1, 2)
    metadata = dict(fps=fps, frames_indices=indices, total_num_frames=total, video_backend="decord")
    return video, metadata, sample_fps


def _av_open(path: str):
    """``av.open`` with undecodable metadata ignored: PyAV 18 (the pinned release) takes
    ``metadata_errors``; PyAV 19 dropped the argument (a TypeError, not a decode failure)."""
    import av

    try:
        return av.open(path, metadata_errors="ignore")
    except TypeError:
        return av.open(path)


def _pyav_count(path: str) -> int:
    """Frames of the best video stream, counted as decord counts them: one per video packet."""
    with _av_open(path) as container:
        stream = container.streams.best("video")
        return sum(1 for packet in container.demux(stream) if packet.size)


def _read_pyav(ele: dict):
    """PyAV reader with qwen-vl-utils' sampling: same frame count rule as decord (container frame
    count, else one frame per packet), same fps (average frame rate), same indices."""
    import av
    import numpy as np
    import torch

    path = ele["video"]
    with _av_open(path) as container:
        stream = container.streams.best("video")
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        header_frames = int(stream.frames or 0)
    total = header_frames or _pyav_count(path)
    if total < 1:
        raise VideoError("not a video / cannot be decoded: the video stream has no frames", path=path)
    if not rate:
        duration = None
        with _av_open(path) as container:
            duration = container.duration / 1e6 if container.duration else None
        if not duration:
            raise VideoError("not a video / cannot be decoded: no frame rate and no duration", path=path)
        rate = total / duration
    fps = float(rate)

    for attempt in range(2):
        indices, sample_fps = _sample(ele, total, fps)
        wanted, last = set(indices), max(indices)
        frames: dict[int, np.ndarray] = {}
        decoded, error = 0, None
        with _av_open(path) as container:
            stream = container.streams.best("video")
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    if decoded in wanted:
                        frames[decoded] = frame.to_ndarray(format="rgb24")
                    decoded += 1
                    if decoded > last:
                        break
            except (av.error.FFmpegError, EOFError) as err:
                error = err
        if decoded > last:
            break
        if decoded == 0:
            detail = _short(error) if error is not None else "no frame could be decoded"
            raise VideoError(f"not a video / cannot be decoded: {detail}", path=path)
        if error is not None:
            raise VideoError(f"truncated: decoded {decoded} of {total} frames ({_short(error)})", path=path)
        # the stream ended cleanly before the header's frame count. A few frames short is common
        # (edit lists, dropped leading B-frames): trust the frames that exist. Far short means the
        # index promises data that is not there (an mp4 with its index first, cut short).
        if total - decoded > max(2, math.ceil(0.05 * total)):
            raise VideoError(f"truncated: decoded {decoded} of {total} frames the header promises", path=path)
        log.debug("%s: header says %d frames, stream has %d; resampling", path, total, decoded)
        total = decoded
    else:  # pragma: no cover - a stream that decodes differently twice
        raise VideoError("not a video / cannot be decoded: frame count changes between reads", path=path)
    video = torch.from_numpy(np.stack([frames[i] for i in indices])).permute(0, 3, 1, 2)
    metadata = dict(fps=fps, frames_indices=indices, total_num_frames=total, video_backend="pyav")
    return video, metadata, sample_fps


_READER_FUNCTIONS = {"decord": _read_decord, "pyav": _read_pyav}


def resize_like_qwen(video: "torch.Tensor", ele: Mapping[str, Any], image_patch_size: int = 16) -> "torch.Tensor":
    """Resize uint8 frames [T, 3, H, W] exactly as ``qwen_vl_utils.fetch_video`` does after reading
    (same pixel budget rules, ``smart_resize``, bicubic with antialias); stays uint8 where
    ``fetch_video`` returns the same values as float."""
    return resize_frames(video, qwen_frame_size(video.shape, ele, image_patch_size))


def qwen_frame_size(shape: Sequence[int], ele: Mapping[str, Any], image_patch_size: int = 16) -> tuple[int, int]:
    """(height, width) that ``qwen_vl_utils.fetch_video`` resizes frames of ``shape`` [T, 3, H, W] to.
    ValueError where smart_resize refuses the aspect ratio."""
    from qwen_vl_utils import vision_process as vp

    factor = image_patch_size * vp.SPATIAL_MERGE_SIZE
    nframes, _, height, width = shape
    min_pixels = ele.get("min_pixels", vp.VIDEO_MIN_TOKEN_NUM * factor * factor)
    total_pixels = ele.get("total_pixels", vp.MODEL_SEQ_LEN * factor * factor * 0.9)
    max_pixels = max(min(vp.VIDEO_MAX_TOKEN_NUM * factor * factor, total_pixels / nframes * vp.FRAME_FACTOR),
                     int(min_pixels * 1.05))
    max_pixels = min(ele.get("max_pixels", max_pixels), max_pixels)
    resized_height, resized_width = vp.smart_resize(height, width, factor=factor,
                                                    min_pixels=min_pixels, max_pixels=max_pixels)
    # smart_resize can floor a thin side to 0 under a small pixel budget (e.g. 200x48 at 4 tokens
    # a frame); keep at least one visual token on each side so that every decodable video is scored
    return max(factor, resized_height), max(factor, resized_width)


def resize_frames(video: "torch.Tensor", size: tuple[int, int]) -> "torch.Tensor":
    """Frames [T, 3, H, W] resized to ``size`` (bicubic with antialias, qwen-vl-utils' way), on the
    frames' device (on a GPU the uint8 values may differ from the CPU's by a rounding step)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    return F.resize(video, list(size), interpolation=InterpolationMode.BICUBIC, antialias=True)


@dataclass
class LoadedVideo:
    """Sampled, resized frames of one video and what Qwen3-VL's processor needs with them.

    ``frames``: uint8 [T, 3, H, W] (T even, H and W multiples of ``2 * image_patch_size``);
    ``metadata``: ``video_metadata`` for transformers 5 (``fps`` and ``total_num_frames`` of the
    source, ``frames_indices`` sampled, ``duration``, ``video_backend``); ``sample_fps``: frames sampled
    per second of video (qwen-vl-utils' value); ``reader``: ``"decord"`` or ``"pyav"``."""

    frames: "torch.Tensor"
    metadata: dict
    sample_fps: float
    reader: str
    path: str = ""
    video_id: str | None = None
    seconds: float = 0.0
    source_size: tuple[int, int] = (0, 0)  # (height, width) before resizing
    errors: dict = field(default_factory=dict)  # reader → message, for readers that failed first
    resize_to: tuple[int, int] | None = None  # (height, width) still to resize the frames to (load_video(resize=False))

    def resized(self, device=None) -> "LoadedVideo":
        """This video with its frames resized (``resize_to``), on ``device`` (default: where they are)."""
        frames = self.frames if device is None else self.frames.to(device)
        if self.resize_to is None:
            return self if frames is self.frames else replace(self, frames=frames)
        return replace(self, frames=resize_frames(frames, self.resize_to), resize_to=None)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def visual_tokens(self) -> int:
        """Visual tokens Qwen3-VL makes of these frames (2 frames merged in time, 2x2 in space)."""
        t, _, h, w = self.frames.shape
        h, w = self.resize_to or (h, w)
        return (t // 2) * (h // 32) * (w // 32)


def load_video(path: PathLike, settings: VideoSettings | None = None, *, readers: Sequence[str] | None = None,
               video_id: str | None = None, resize: bool = True) -> LoadedVideo:
    """Decode, sample and resize one video as qwen-vl-utils would for ``settings``.

    ``resize=False``: the sampled frames as decoded, with the size to resize them to in ``resize_to``
    (:meth:`LoadedVideo.resized` resizes them, e.g. on the GPU, where it is cheap: resizing is most
    of a decode's CPU time).

    ``readers`` are tried in order; a reader that fails is logged and the next one tried. Default:
    decord (as qwen-vl-utils), then PyAV; PyAV first for the containers of
    :data:`PYAV_FIRST_FORMATS`. Raises :class:`VideoError` (reason set) if the file fails the probe
    or no reader can decode it."""
    settings = settings or VideoSettings.paper()
    if readers is not None:
        readers = tuple(readers)
        unknown = [r for r in readers if r not in _READER_FUNCTIONS]
        if unknown or not readers:
            raise ValueError(f"unknown video reader(s) {unknown or readers!r} (choose from {', '.join(READERS)})")
    path = Path(path)
    info = probe(path, video_id)
    if readers is None:
        pyav_first = bool(set(info.container.split(",")) & PYAV_FIRST_FORMATS)
        readers = ("pyav", "decord") if pyav_first else READERS
    _count_decode(path)
    ele = settings.qwen_element(path)
    errors: dict[str, str] = {}
    last_error: BaseException | None = None
    start = time.perf_counter()
    for name in readers:
        try:
            video, metadata, sample_fps = _READER_FUNCTIONS[name](dict(ele))
        except Exception as err:
            last_error = err
            errors[name] = err.reason if isinstance(err, VideoError) else _short(err)
            if name != readers[-1]:
                log.warning("%s: %s reader failed (%s); trying %s", path, name, errors[name],
                            readers[readers.index(name) + 1])
            continue
        try:
            size = qwen_frame_size(video.shape, ele, settings.image_patch_size)
            frames = resize_frames(video, size) if resize else video
        except ValueError as err:  # smart_resize: aspect ratio beyond 200
            raise VideoError(f"unsupported frame size {info.width}x{info.height}: {_short(err)}", video_id, path) from None
        metadata = dict(metadata)
        metadata["frames_indices"] = [int(i) for i in metadata["frames_indices"]]
        metadata["fps"] = float(metadata["fps"])
        metadata["total_num_frames"] = int(metadata["total_num_frames"])
        metadata["duration"] = metadata["total_num_frames"] / metadata["fps"] if metadata["fps"] else None
        metadata["video_backend"] = name
        seconds = time.perf_counter() - start
        log.debug("decoded %s with %s: %d of %d frames, %dx%d -> %dx%d, %.3f s", path, name, frames.shape[0],
                  metadata["total_num_frames"], video.shape[3], video.shape[2], frames.shape[3], frames.shape[2], seconds)
        return LoadedVideo(frames=frames, metadata=metadata, sample_fps=float(sample_fps), reader=name,
                           path=str(path), video_id=video_id, seconds=seconds,
                           source_size=(int(video.shape[2]), int(video.shape[3])), errors=errors,
                           resize_to=None if resize else size)
    if isinstance(last_error, VideoError):
        reason = last_error.reason
    else:
        reason = "not a video / cannot be decoded: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
    raise VideoError(reason, video_id, path)


# ----------------------------------------------------------------------------- failure log


class FailureLog:
    """``failures.jsonl``: one ``{"video_id", "path", "reason"}`` line per video a job could not use.

    ``FailureLog(path)`` takes the JSONL file, or a folder (then ``<folder>/failures.jsonl``); see also
    :meth:`in_dir`. It is a :class:`formats.JsonlAppender` keyed by video id: a resumed job never
    records a video twice, each record is flushed at once and a torn last line is dropped on open;
    a retried video's record is replaced by its outcome (:meth:`replace`, :meth:`discard`).
    """

    FILENAME = "failures.jsonl"

    def __init__(self, path: PathLike):
        path = Path(path)
        self.path = path / self.FILENAME if path.is_dir() else path
        self._lock = threading.Lock()
        self._file = JsonlAppender(self.path, "video_id")

    @classmethod
    def in_dir(cls, output_dir: PathLike) -> "FailureLog":
        return cls(Path(output_dir) / cls.FILENAME)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._file

    def __len__(self) -> int:
        return len(self._file)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._file.records)

    def records(self) -> list[dict]:
        return list(self._file.records.values())

    def record(self, video_id: str, path: PathLike | None, reason: str) -> bool:
        """Append a failure; False (and nothing written) if ``video_id`` is already recorded."""
        return self._write(self._file.append, video_id, path, reason)

    def replace(self, video_id: str, path: PathLike | None, reason: str) -> bool:
        """Record a failure, replacing an earlier record of ``video_id`` (a retry's outcome)."""
        return self._write(self._file.put, video_id, path, reason)

    def _write(self, write, video_id, path, reason) -> bool:
        entry = {"video_id": str(video_id), "path": None if path is None else str(path), "reason": str(reason)}
        with self._lock:
            changed = write(entry)
        if changed:
            log.info("video %s failed: %s", video_id, reason)
        return changed

    def discard(self, video_id: str) -> bool:
        """Drop the record of ``video_id`` (it succeeded on a retry); False when there was none."""
        with self._lock:
            return self._file.discard(video_id)

    def record_error(self, error: VideoError, video_id: str | None = None) -> bool:
        """Append a :class:`VideoError` (its ``video_id`` unless one is given)."""
        video_id = video_id if video_id is not None else error.video_id
        if video_id is None:
            raise ValueError("a failure record needs a video id")
        return self.record(video_id, error.path, error.reason)
