"""What a stage-1 (caption SFT) model perceives: per-attribute accuracy of its greedy captions.

    python research/caption_probe.py --model results/models/stage1 [--videos 200] [--seed 99]
        [--config config/config.yaml] [--output probe.json]

Renders ``--videos`` held-out synthetic videos (the perception set of a benchmark drawn with
``--seed``, the run's other ``dataset.synthetic`` settings; no video of the run's benchmark is
among them), captions each with the stage-1 prompt (``rankvideo.prompts.caption_messages``), reads
count, colour, shape, motion and background back from the words and prints the share right per
attribute (chance: 1/3 for count, 1/4 for the others).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def read_attributes(caption: str) -> dict:
    """The attributes a reference-style caption names (None where it names none or several)."""
    from rankvideo.demo.synthetic import BACKGROUNDS, COLOURS, MOTION_PHRASES, SHAPES

    text = caption.replace("<think>", " ").replace("</think>", " ").strip().lower()
    words = text.split()
    subject, _, scene = text.partition(" across ")
    counts = {"a": 1, "single": 1, "one": 1, "two": 2, "three": 3}

    def one(found):
        return found[0] if len(found) == 1 else None

    return {
        "count": counts.get(words[1] if words[:1] == ["a"] and len(words) > 1 else (words[0] if words else "")),
        "colour": one([c for c in COLOURS if c in subject.split()]),
        "shape": one([s for s in SHAPES if s in subject or s + "s" in subject]),
        "motion": one([m for m, phrase in MOTION_PHRASES.items() if phrase in text]),
        "background": one([b for b in BACKGROUNDS if b in scene.split(".")[0].split()]),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="results/models/stage1")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--output")
    args = parser.parse_args(argv)

    import yaml

    from rankvideo import config, prompts
    from rankvideo.video import VideoSettings
    from rankvideo.data import formats
    from rankvideo.backends.hf import HFBackend
    from rankvideo.demo.synthetic import ATTRIBUTES, SyntheticConfig, generate
    from rankvideo.video import load_video

    cfg = config.validate(yaml.safe_load(Path(args.config).read_text()))
    synthetic = dict(cfg["dataset"]["synthetic"], seed=args.seed, n_videos=4, n_train_queries=4, n_test_queries=1,
                     n_perception_videos=args.videos)
    settings = VideoSettings.from_config(cfg["train_stage1"]["video"])
    backend = HFBackend(args.model, device="cpu")
    right = {a: 0 for a in ATTRIBUTES}
    with tempfile.TemporaryDirectory() as tmp:
        generate(SyntheticConfig.from_dict(synthetic), tmp)
        truth = formats.read_jsonl(Path(tmp) / "perception" / "videos.jsonl")
        for start in range(0, len(truth), args.batch_size):
            chunk = truth[start:start + args.batch_size]
            items = [(load_video(Path(tmp) / "perception" / "videos" / f"{r['doc_id']}.mp4", settings),
                      prompts.caption_messages()) for r in chunk]
            for row, caption in zip(chunk, backend.generate_batch(items, max_new_tokens=32)):
                read = read_attributes(caption)
                for attr in ATTRIBUTES:
                    right[attr] += read[attr] == row[attr]
    result = {"model": args.model, "videos": len(truth), "accuracy": {a: right[a] / len(truth) for a in ATTRIBUTES}}
    print(" | ".join(f"{a} {v:.3f}" for a, v in result["accuracy"].items()), f"({len(truth)} held-out videos)")
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
