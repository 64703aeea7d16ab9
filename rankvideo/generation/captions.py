"""Captions: a video LLM writes a short factual caption per video.

    python -m rankvideo.generate_captions --video-root R --output captions.jsonl --model-name M \\
        [--ids FILE] [--fps 2] [--max-frames 16] [--max-new-tokens 196] [--backend hf|vllm] [--batch-size 4]

The videos are the video files under ``--video-root`` at any depth (a MultiVENT 2.0 tree as well
as a flat folder), each by its file name without the extension; ``--ids`` picks some of them.
Records ``{"doc_id", "text", "meta"}`` one per line, appended as they are made: a rerun finishes
the missing ids and never duplicates one. Videos that cannot be read go to ``failures.jsonl``
beside the output (``--failures``) and are counted; a rerun tries them again and replaces their records
by the outcome. One process writes an output at a time (a lock file beside it).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from rankvideo import backends, logs, models, prompts
from rankvideo.data import formats
from rankvideo.data.formats import io_error_sentence
from rankvideo.video import VIDEO_EXTENSIONS, FailureLog, VideoError, VideoResolver, VideoSettings, load_video

log = logging.getLogger(__name__)


def read_ids(path) -> list[str]:
    """Video ids, one per line (or the keys of a video2queries JSON)."""
    if str(path).endswith(".json"):
        return sorted(formats.read_video2queries(path))
    return formats.read_id_list(path)


def candidate_ids(training_files, video2queries) -> list[str]:
    """The videos stage 2 meets: those of the training JSONL files' pairs and the keys of the test
    video2queries map (sorted, each once)."""
    ids = {str(record["doc_id"]) for path in training_files for record in formats.read_jsonl(path, required=("doc_id",))}
    return sorted(ids | set(formats.read_video2queries(video2queries)))


def caption_videos(ids: Sequence[str], resolver: VideoResolver, generator, output, failures_path, settings: VideoSettings,
                   max_new_tokens: int, batch_size: int, model_name: str, progress: bool = True,
                   messages=prompts.captioner_messages, parse=None) -> dict:
    """Caption every id not yet in ``output``; returns counts. ``messages()`` is the chat asked (the
    captioner's by default; :func:`rankvideo.prompts.caption_messages` asks as stage 1 was trained)
    and ``parse(text)`` the caption in the answer (default: the answer, spaces collapsed;
    :func:`rankvideo.prompts.caption_from_output` for a stage-1 model's). Videos that failed before
    are tried again and their failure records replaced by the outcome. One writer per output file
    (a lock beside it: :class:`formats.DirLock`)."""
    with formats.DirLock(Path(output).parent, lock_file=Path(output).with_name(f".{Path(output).name}.lock")):
        return _caption_videos(ids, resolver, generator, output, failures_path, settings, max_new_tokens, batch_size,
                               model_name, progress, messages, parse)


def _caption_videos(ids, resolver, generator, output, failures_path, settings, max_new_tokens, batch_size, model_name,
                    progress, messages, parse) -> dict:
    done = formats.JsonlAppender(output, "doc_id")
    failures = FailureLog(failures_path)
    todo = [i for i in dict.fromkeys(ids) if i not in done]  # failed ones are tried again
    counts = {"asked": len(set(ids)), "already_done": len(set(ids)) - len(todo), "captioned": 0, "failed": 0,
              "empty": 0}
    bar = logs.progress(total=len(todo), desc=f"captions {model_name}", unit="video", enabled=progress, logger=log)
    for start in range(0, len(todo), batch_size):
        batch = []
        for video_id in todo[start:start + batch_size]:
            try:
                batch.append((video_id, load_video(resolver.resolve(video_id), settings, video_id=video_id)))
            except VideoError as error:
                failures.replace(video_id, error.path, error.reason)
                counts["failed"] += 1
                bar.update(1)
        if not batch:
            continue
        began = time.perf_counter()
        texts = generator.generate_batch([(video, messages()) for _, video in batch], max_new_tokens)
        seconds = (time.perf_counter() - began) / len(batch)
        for (video_id, video), text in zip(batch, texts):
            text = parse(text) if parse else " ".join(text.split())
            counts["empty"] += not text
            done.append({"doc_id": video_id, "text": text,
                         "meta": {"model": model_name, "backend": getattr(generator, "name", None),
                                  "frames": video.num_frames, "max_new_tokens": max_new_tokens,
                                  "seconds": round(seconds, 3)}})
            failures.discard(video_id)
            counts["captioned"] += 1
        bar.update(len(batch))
    bar.close()
    if counts["empty"]:
        log.warning("%d captions are empty (kept, so that the gap is visible downstream)", counts["empty"])
    log.info("captions: %s", counts)
    return counts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rankvideo.generate_captions", description=__doc__.split("\n\n")[0])
    parser.add_argument("--video-dir", "--video-root", dest="video_root", required=True, help="folder of the videos: every video file under it, at "
                                                            "any depth, by its name without the extension")
    parser.add_argument("--video-layout", choices=["flat", "multivent", "index"], default=None,
                        help="find each id at its path in this layout instead of searching --video-root")
    parser.add_argument("--video-index", help="TSV video_id<TAB>path (layout index)")
    parser.add_argument("--output", required=True, help="captions JSONL")
    parser.add_argument("--failures", help="failure manifest (default: failures.jsonl beside --output)")
    parser.add_argument("--model", "--model-name", dest="model_name", required=True, help="video LLM: local folder or hub id")
    parser.add_argument("--ids", help="video ids to caption: a file of ids or a video2queries JSON (default: all files)")
    parser.add_argument("--fps", type=float, default=2.0)
    parser.add_argument("--max-frames", type=int, default=16)
    parser.add_argument("--tokens-per-frame", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=196)
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--cache-dir")
    parser.add_argument("--device")
    parser.add_argument("--dtype")
    parser.add_argument("--tensor-parallel", type=int, default=1)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup()
    try:
        layout = args.video_layout or ("index" if args.video_index else None)
        resolver = VideoResolver(args.video_root, layout, args.video_index) if layout else VideoResolver.scan(args.video_root)
        if args.ids:
            ids = read_ids(args.ids)
        else:
            ids = resolver.ids() if resolver.ids() is not None else VideoResolver.scan(args.video_root).ids()
            if not ids:
                raise ValueError(f"no video files under {args.video_root} ({', '.join(VIDEO_EXTENSIONS)})")
    except (formats.FormatError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        counts = run(args.model_name, ids, resolver, args.output, args.failures,
                     VideoSettings.with_tokens(args.fps, args.max_frames, args.tokens_per_frame), args.max_new_tokens,
                     args.batch_size, args.backend, progress=not args.no_progress,
                     options={"cache_dir": args.cache_dir, "dtype": args.dtype,
                              **({"device": args.device} if args.backend == "hf" else
                                 {"tensor_parallel_size": args.tensor_parallel})})
    except (OSError, formats.FormatError) as error:  # read-only or full disk, missing weights, lock held
        print(f"error: {io_error_sentence(error)}", file=sys.stderr)
        return 2
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 1 if counts["asked"] and not (counts["captioned"] + counts["already_done"]) else 0


def run(model: str, ids, resolver, output, failures, settings, max_new_tokens, batch_size, backend="hf",
        progress=True, options: dict | None = None, stage1_prompt: bool = False) -> dict:
    """Caption ``ids`` with ``model``; ``stage1_prompt``: ask as stage 1 was trained (the descriptions
    of a stage-1 model) instead of the captioner's prompt."""

    generator = backends.create(backend, model, **(options or {}))
    failures = failures or Path(output).with_name(FailureLog.FILENAME)
    style = {"messages": prompts.caption_messages, "parse": prompts.caption_from_output} if stage1_prompt else {}
    return caption_videos(ids, resolver, generator, output, failures, settings, max_new_tokens, batch_size,
                          models.model_name(model), progress, **style)


if __name__ == "__main__":
    sys.exit(main())
