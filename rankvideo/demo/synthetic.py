"""A synthetic text-to-video retrieval benchmark, rendered from scratch.

Each video shows ``count`` objects of one ``shape`` and ``colour`` moving in one ``motion``
direction over a ``background``. Queries name a subset of those attributes in plain words
("two red circles moving left", "something moving up on a white background"); graded qrels
judge every video for every query: 2 when all the query's attributes match, 1 when all but one
match (queries of two or more attributes), 0 otherwise.

Every video also gets

- a *reference caption*, what a careful annotator would write (all attributes, exact), and
- an *ASR-like transcript*: speech that mentions only some attributes, mishears others
  (sound-alike words, or a wrong value), and chats about things that are not in the video.

The transcript is what a text first stage (BM25) can see; the pixels carry the rest. Test
queries use attribute combinations that no training query contains; the training split also
holds partial queries of one or two attributes so that a model can learn words, not strings.

Besides the corpus, ``n_perception_videos`` more videos (ids ``p0001``...) are rendered with their
reference captions only: a perception set for stage-1 caption SFT, in no corpus, query or qrels.

Everything is drawn from one seeded generator, and videos are encoded with x264 in a
bit-exact, single-threaded mode: the same configuration gives byte-identical files.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rankvideo import config, logs
from rankvideo.data import formats

log = logging.getLogger(__name__)

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 90, 235), "yellow": (235, 215, 40)}
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
COUNTS = (1, 2, 3)
BACKGROUNDS = ("black", "white", "grey", "checkered")
ATTRIBUTES = ("count", "colour", "shape", "motion", "background")

COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
MOTION_PHRASES = {"left": "from right to left", "right": "from left to right", "up": "upward", "down": "downward"}

# What speech recognition makes of each attribute word: sound-alikes that are not attribute words.
MISHEARD = {
    "circle": ["circus", "sir cool"], "square": ["scare", "swear"], "triangle": ["try angle", "tangle"],
    "diamond": ["dynamo", "diamante"], "red": ["read", "bread"], "green": ["screen", "grin"],
    "blue": ["blew", "glue"], "yellow": ["hello", "mellow"], "left": ["laughed", "lift"],
    "right": ["write", "bright"], "up": ["cup", "pup"], "down": ["town", "gown"],
    "one": ["won", "fun"], "two": ["tutu", "tool"], "three": ["tree", "free"],
    "black": ["block", "lack"], "white": ["wide", "quite"], "grey": ["gray day", "prey"],
    "checkered": ["checked her", "chequers"],
}
FILLERS = ("uh", "um", "so", "okay", "you know", "like", "well", "right so", "alright")
CHATTER = (
    "my cousin had a {colour} bike once", "that reminds me of a {shape} table we had",
    "we were going {motion} the hill yesterday", "the kitchen wall is sort of {background}",
    "i counted {count} birds this morning", "is this thing recording", "anyway let me start again",
    "my {colour} jacket is {background} on the inside", "the {shape} sign pointed {motion}",
    "{count} of my friends would say {colour}", "i drew a {shape} on a {background} page",
    "the light in here is terrible", "give me a second", "can you hear me okay",
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and noise of the benchmark: the keys of ``dataset.synthetic`` in the config schema,
    which documents each one and holds its default."""

    seed: int
    n_videos: int
    width: int
    height: int
    frames: int
    fps: int
    object_size: int
    speed: float
    n_test_queries: int
    test_query_attributes: int
    n_train_queries: int
    train_partial_fraction: float
    asr_mention_prob: float
    asr_garble_prob: float
    asr_wrong_value_prob: float
    asr_chatter_rate: float
    crf: int
    n_perception_videos: int = 0

    @classmethod
    def from_dict(cls, values: dict | None = None) -> "SyntheticConfig":
        """Schema defaults overridden by ``values``; unknown or mistyped keys raise ConfigError."""

        section = config.validate({"dataset": {"synthetic": dict(values or {})}})["dataset"]["synthetic"]
        return cls(**section)


@dataclass(frozen=True)
class Video:
    video_id: str
    count: int
    colour: str
    shape: str
    motion: str
    background: str
    jitter: dict = field(default_factory=dict, compare=False)

    def attributes(self) -> dict:
        return {name: getattr(self, name) for name in ATTRIBUTES}


# ----------------------------------------------------------------------------- language


def _plural(shape: str) -> str:
    return shape + "s"


def describe(attrs: dict) -> str:
    """Plain-words query for a subset of attributes (keys of ATTRIBUTES)."""
    count, colour, shape = attrs.get("count"), attrs.get("colour"), attrs.get("shape")
    if shape is None and count is None:
        head = f"something {colour}" if colour else "something"
    else:
        noun = shape or "object"
        if count is None:
            head = " ".join(w for w in ("a", colour, noun) if w)
        elif count == 1:
            head = " ".join(w for w in ("a single", colour, noun) if w)
        else:
            head = " ".join(w for w in (COUNT_WORDS[count], colour, _plural(noun)) if w)
    parts = [head]
    if "motion" in attrs:
        parts.append(f"moving {attrs['motion']}")
    if "background" in attrs:
        parts.append(f"on a {attrs['background']} background")
    return " ".join(parts)


def reference_caption(video: Video) -> str:
    """What a careful annotator writes: every attribute, exactly."""
    if video.count == 1:
        subject, verb = f"A single {video.colour} {video.shape}", "moves"
    else:
        subject, verb = f"{COUNT_WORDS[video.count].capitalize()} {video.colour} {_plural(video.shape)}", "move"
    return (f"{subject} {verb} {MOTION_PHRASES[video.motion]} across a {video.background} background. "
            f"The scene contains {COUNT_WORDS[video.count]} {'object' if video.count == 1 else 'objects'} "
            f"and nothing else.")


def _spoken(rng: np.random.Generator, attr: str, value, cfg: SyntheticConfig) -> str | None:
    """One attribute as speech: omitted (None), right, misheard, or a wrong value."""
    if rng.random() >= cfg.asr_mention_prob:
        return None
    word = COUNT_WORDS[value] if attr == "count" else str(value)
    if rng.random() < cfg.asr_garble_prob:
        if rng.random() < cfg.asr_wrong_value_prob:
            choices = {"count": [COUNT_WORDS[c] for c in COUNTS], "colour": list(COLOURS), "shape": list(SHAPES),
                       "motion": list(MOTIONS), "background": list(BACKGROUNDS)}[attr]
            return str(rng.choice([c for c in choices if c != word]))
        return str(rng.choice(MISHEARD[word]))
    return word


def transcript(rng: np.random.Generator, video: Video, cfg: SyntheticConfig) -> str:
    """An ASR-like transcript: partial, noisy, with filler and off-topic chatter."""
    said = {attr: _spoken(rng, attr, getattr(video, attr), cfg) for attr in ATTRIBUTES}
    pieces = [str(rng.choice(FILLERS))]
    thing = " ".join(w for w in (said["count"], said["colour"], said["shape"]) if w)
    if thing:
        pieces.append(f"here we have {thing}")
    if said["motion"]:
        pieces.append(f"{rng.choice(FILLERS)} it goes {said['motion']}")
    if said["background"]:
        pieces.append(f"and the back is {said['background']}")
    for _ in range(int(rng.poisson(cfg.asr_chatter_rate))):
        template = str(rng.choice(CHATTER))
        pieces.append(template.format(colour=rng.choice(list(COLOURS)), shape=rng.choice(SHAPES),
                                      motion=rng.choice(list(MOTIONS)), background=rng.choice(BACKGROUNDS),
                                      count=rng.choice(["two", "three", "four"])))
    if len(pieces) == 1:
        pieces.append("not sure what to say about this one")
    return " ".join(pieces)


# ----------------------------------------------------------------------------- pixels


def _background(name: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    shade = int(rng.integers(-8, 9))
    if name == "checkered":
        tile = 8
        yy, xx = np.mgrid[0:height, 0:width]
        board = ((yy // tile + xx // tile) % 2).astype(np.int32)
        image = np.where(board[..., None] == 1, 170 + shade, 80 + shade) * np.ones(3, dtype=np.int32)
    else:
        level = {"black": 18, "white": 236, "grey": 128}[name] + shade
        image = np.full((height, width, 3), level, dtype=np.int32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _shape_mask(shape: str, cx: float, cy: float, size: float, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    dx, dy, r = xx - cx, yy - cy, size / 2
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= r
    if shape == "triangle":  # apex up, base at the bottom
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.58)
    raise ValueError(f"unknown shape {shape!r}")


def render_frames(video: Video, cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """(frames, height, width, 3) uint8 frames of one video."""
    h, w, n = cfg.height, cfg.width, cfg.frames
    size = cfg.object_size * float(rng.uniform(0.85, 1.15))
    colour = np.clip(np.array(COLOURS[video.colour]) + rng.integers(-15, 16, size=3), 0, 255).astype(np.uint8)
    dx, dy = MOTIONS[video.motion]
    travel = cfg.speed * (n - 1)
    margin = size / 2 + 1
    # objects spread over bands across the motion; each band holds one object
    across_len = h if dx else w
    along_len = w if dx else h
    band = across_len / video.count
    starts = []
    for i in range(video.count):
        across = band * i + band / 2 + float(rng.uniform(-band / 4, band / 4))
        across = float(np.clip(across, margin, across_len - margin))
        direction = dx or dy
        low, high = (margin, along_len - margin - travel) if direction > 0 else (margin + travel, along_len - margin)
        along = float(rng.uniform(low, max(low, high)))
        starts.append((along, across))
    background = _background(video.background, h, w, rng)
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        frame = background.copy()
        for along, across in starts:
            position = along + (dx or dy) * cfg.speed * t
            cx, cy = (position, across) if dx else (across, position)
            frame[_shape_mask(video.shape, cx, cy, size, h, w)] = colour
        frames[t] = frame
    return frames


def encode_mp4(path: Path, frames: np.ndarray, fps: int, crf: int) -> None:
    """H.264/yuv420p mp4, bit-exact and single-threaded so that files are reproducible."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with av.open(str(tmp), mode="w", format="mp4",
                 options={"fflags": "+bitexact", "movflags": "+faststart"}) as container:
        # mbtree off: on frames this small, x264's macroblock-tree lookahead gave different bytes
        # (and pixels) for the same frames from one call to the next
        stream = container.add_stream("libx264", rate=fps,
                                      options={"crf": str(crf), "preset": "medium", "threads": "1",
                                               "x264-params": "mbtree=0"})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


# ----------------------------------------------------------------------------- queries


def _matches(query: dict, video: Video) -> int:
    return sum(getattr(video, attr) == value for attr, value in query.items())


def grade(query: dict, video: Video) -> int:
    """2 = every attribute matches; 1 = all but one (queries of 2+ attributes); 0 otherwise."""
    hits = _matches(query, video)
    if hits == len(query):
        return 2
    if len(query) >= 2 and hits == len(query) - 1:
        return 1
    return 0


def _key(attrs: dict) -> frozenset:
    return frozenset(attrs.items())


def make_queries(videos: list[Video], cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[dict, dict]:
    """Test and training queries as {qid: attrs}. Test combinations never occur in training."""
    subsets = list(itertools.combinations(ATTRIBUTES, cfg.test_query_attributes))
    test: dict[str, dict] = {}
    seen: set[frozenset] = set()
    attempts = 0
    while len(test) < cfg.n_test_queries:
        attempts += 1
        if attempts > 100 * cfg.n_test_queries:
            raise ValueError("could not draw enough distinct test queries; lower n_test_queries")
        video = videos[int(rng.integers(len(videos)))]
        subset = subsets[int(rng.integers(len(subsets)))]
        attrs = {a: video.attributes()[a] for a in subset}
        if _key(attrs) in seen:
            continue
        seen.add(_key(attrs))
        test[f"test-{len(test) + 1:03d}"] = attrs

    def contains_test_combination(attrs: dict) -> bool:
        key = _key(attrs)
        return any(test_key <= key for test_key in seen)

    train: dict[str, dict] = {}
    train_seen: set[frozenset] = set()
    n_partial = round(cfg.n_train_queries * cfg.train_partial_fraction)
    attempts = 0
    while len(train) < cfg.n_train_queries:
        attempts += 1
        if attempts > 200 * cfg.n_train_queries:
            raise ValueError("could not draw enough distinct training queries; lower n_train_queries")
        partial = len(train) < n_partial
        size = int(rng.integers(1, 3)) if partial else int(rng.integers(cfg.test_query_attributes, len(ATTRIBUTES) + 1))
        video = videos[int(rng.integers(len(videos)))]
        subset = sorted(rng.choice(len(ATTRIBUTES), size=size, replace=False))
        attrs = {ATTRIBUTES[i]: video.attributes()[ATTRIBUTES[i]] for i in subset}
        if _key(attrs) in train_seen or contains_test_combination(attrs):
            continue
        train_seen.add(_key(attrs))
        train[f"train-{len(train) + 1:03d}"] = attrs
    return train, test


# ----------------------------------------------------------------------------- whole benchmark


def draw_videos(cfg: SyntheticConfig, rng: np.random.Generator, n: int | None = None, prefix: str = "v") -> list[Video]:
    return [
        Video(video_id=f"{prefix}{i + 1:04d}", count=int(rng.choice(COUNTS)), colour=str(rng.choice(list(COLOURS))),
              shape=str(rng.choice(SHAPES)), motion=str(rng.choice(list(MOTIONS))),
              background=str(rng.choice(BACKGROUNDS)))
        for i in range(cfg.n_videos if n is None else n)
    ]


def _render_all(videos: list[Video], cfg: SyntheticConfig, seed: np.random.SeedSequence, folder: Path, desc: str) -> None:
    for video, video_seed in logs.progress(list(zip(videos, seed.spawn(len(videos)))), desc=desc, unit="video", logger=log):
        frames = render_frames(video, cfg, np.random.default_rng(video_seed))
        encode_mp4(folder / f"{video.video_id}.mp4", frames, cfg.fps, cfg.crf)


def _write_reference(folder: Path, videos: list[Video]) -> None:
    formats.write_jsonl(folder / "videos.jsonl", [{"doc_id": v.video_id, **v.attributes()} for v in videos])
    formats.write_jsonl(folder / "captions_reference.jsonl",
                        [{"doc_id": v.video_id, "text": reference_caption(v), "meta": {"source": "reference"}}
                         for v in videos])


def render_set(cfg: SyntheticConfig, seed: np.random.SeedSequence, n: int, folder: Path, prefix: str) -> list[Video]:
    """``n`` more videos drawn and rendered like the corpus's, outside any query: ``folder/videos/``,
    ``videos.jsonl`` and ``captions_reference.jsonl`` (the perception set; benchmarks' probe sets)."""
    catalogue, pixels = seed.spawn(2)
    videos = draw_videos(cfg, np.random.default_rng(catalogue), n, prefix=prefix)
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    _render_all(videos, cfg, pixels, folder / "videos", f"render {folder.name} videos")
    _write_reference(folder, videos)
    return videos


def generate(cfg: SyntheticConfig, output_dir: str | Path) -> dict:
    """Write the benchmark under ``output_dir``; returns a summary (also written as summary.json).

    Files: ``videos/{id}.mp4``, ``queries_train.tsv``, ``queries_test.tsv``, ``qrels.txt`` (both
    splits), ``captions_reference.jsonl`` and ``transcripts.jsonl`` (``{"doc_id", "text", "meta"}``),
    ``videos.jsonl`` (attributes per video) and ``summary.json``; the perception set under
    ``perception/`` (``videos/``, ``captions_reference.jsonl``, ``videos.jsonl``; empty when
    ``n_perception_videos`` is 0).
    """
    out = Path(output_dir)
    root = np.random.SeedSequence(cfg.seed)
    # spawn(5)'s first four children are spawn(4)'s: adding the perception set changed no corpus byte
    catalogue_seed, query_seed, asr_seed, pixel_seed, perception_seed = root.spawn(5)
    videos = draw_videos(cfg, np.random.default_rng(catalogue_seed))
    train, test = make_queries(videos, cfg, np.random.default_rng(query_seed))

    asr_rng = np.random.default_rng(asr_seed)
    _render_all(videos, cfg, pixel_seed, out / "videos", "render videos")
    _write_reference(out, videos)
    perception = render_set(cfg, perception_seed, cfg.n_perception_videos, out / "perception", prefix="p")
    formats.write_jsonl(out / "transcripts.jsonl",
                        [{"doc_id": v.video_id, "text": transcript(asr_rng, v, cfg), "meta": {"source": "synthetic-asr"}}
                         for v in videos])
    formats.write_queries(out / "queries_train.tsv", {q: describe(a) for q, a in train.items()})
    formats.write_queries(out / "queries_test.tsv", {q: describe(a) for q, a in test.items()})
    qrels = {qid: {v.video_id: grade(attrs, v) for v in videos} for qid, attrs in {**train, **test}.items()}
    formats.write_qrels(out / "qrels.txt", qrels)

    def grade_counts(split):
        return {g: sum(1 for q in split for rel in qrels[q].values() if rel == g) / max(1, len(split)) for g in (1, 2)}

    summary = {
        "config": asdict(cfg),
        "n_videos": len(videos),
        "n_perception_videos": len(perception),
        "n_train_queries": len(train),
        "n_train_partial_queries": sum(1 for a in train.values() if len(a) < cfg.test_query_attributes),
        "n_test_queries": len(test),
        "mean_rel2_per_test_query": grade_counts(test)[2],
        "mean_rel1_per_test_query": grade_counts(test)[1],
    }
    formats.write_json(out / "summary.json", summary)
    log.info("synthetic benchmark: %s", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--config", help="YAML file of SyntheticConfig fields (optional)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--n-videos", type=int)
    args = parser.parse_args(argv)
    logs.setup()
    values = {}
    if args.config:
        import yaml

        with open(args.config, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
    if args.seed is not None:
        values["seed"] = args.seed
    if args.n_videos is not None:
        values["n_videos"] = args.n_videos
    generate(SyntheticConfig.from_dict(values), args.output)


if __name__ == "__main__":
    main()
