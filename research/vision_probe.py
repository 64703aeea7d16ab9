"""Can a model's vision tower learn an attribute when trained on it directly?

    python research/vision_probe.py --model results/models/stage1 --videos DIR
        [--attribute shape] [--steps 400] [--lr 1e-3] [--train 1200] [--held-out 200]
        [--fps 4 --max-frames 8 --tokens-per-frame 4] [--output x.json]

grounding_probe.py's read-out finds shape missing from the tiny model's features after caption
training. This asks whether the vision tower can carry it at all: its merged output, averaged over
the video's tokens, feeds a linear head trained with the tower (AdamW, cross-entropy, 16 videos a
step) on the attribute's labels of ``--train`` videos of a rendered set (``DIR/videos.jsonl`` and
``DIR/videos/<id>.mp4``, e.g. a benchmark's ``perception`` folder); reported is the accuracy on the
next ``--held-out`` videos every 100 steps (chance: 1 / number of values).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--videos", required=True, help="folder with videos.jsonl and videos/<id>.mp4")
    parser.add_argument("--attribute", default="shape")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--train", type=int, default=1200)
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=4.0)
    parser.add_argument("--max-frames", type=int, default=8)
    parser.add_argument("--tokens-per-frame", type=int, default=4, help="4: the default benchmark's whole 64x64 frames")
    parser.add_argument("--output")
    args = parser.parse_args(argv)

    import torch

    from rankvideo import logs
    from rankvideo.data import formats
    from rankvideo.demo import synthetic
    from rankvideo.backends.hf import HFBackend
    from rankvideo.video import VideoSettings, load_video

    logs.setup()
    if args.attribute not in synthetic.ATTRIBUTES:
        parser.error(f"--attribute must be one of {', '.join(synthetic.ATTRIBUTES)}")
    folder = Path(args.videos)
    records = list(formats.read_jsonl(folder / "videos.jsonl"))[:args.train + args.held_out]
    if len(records) < args.train + args.held_out:
        parser.error(f"{folder / 'videos.jsonl'} has {len(records)} videos, fewer than --train + --held-out")
    torch.manual_seed(args.seed)
    backend = HFBackend(args.model, prompt_variant="default", answer_tokens="single")
    tower = backend.model.model.visual.float().train()
    for p in tower.parameters():
        p.requires_grad_(True)
    settings = VideoSettings.with_tokens(fps=args.fps, max_frames=args.max_frames, tokens_per_frame=args.tokens_per_frame)
    values = sorted({str(r[args.attribute]) for r in records})
    device = next(tower.parameters()).device
    examples = []  # on the tower's device once, not copied there at every step
    for r in records:
        inputs = backend._processor_inputs([backend._render("")], load_video(str(folder / "videos" / f"{r['doc_id']}.mp4"), settings))
        examples.append((inputs["pixel_values_videos"].float().to(device), inputs["video_grid_thw"].to(device),
                         values.index(str(r[args.attribute]))))
    train, held_out = examples[:args.train], examples[args.train:]

    def features(batch):
        """One tower call for the whole batch; each clip's merged tokens averaged."""
        grids = torch.cat([e[1] for e in batch])
        merged = tower(torch.cat([e[0] for e in batch]), grid_thw=grids).pooler_output
        sizes = (grids.prod(-1) // tower.spatial_merge_size ** 2).tolist()
        return torch.stack([part.mean(0) for part in merged.split(sizes)])

    head = torch.nn.Linear(tower.config.out_hidden_size, len(values)).to(device)
    optimizer = torch.optim.AdamW(list(tower.parameters()) + list(head.parameters()), lr=args.lr)

    def accuracy():
        tower.eval()
        with torch.no_grad():
            hits = head(features(held_out)).argmax(-1) == torch.tensor([e[2] for e in held_out], device=device)
        tower.train()
        return round(float(hits.float().mean()), 3)

    rng = random.Random(args.seed)
    curve = []
    for step in range(1, args.steps + 1):
        batch = rng.sample(train, 16)
        logits = head(features(batch))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([e[2] for e in batch], device=device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 100 == 0 or step == args.steps:
            curve.append({"step": step, "loss": round(float(loss.detach()), 3), "held_out_accuracy": accuracy()})
            print(curve[-1], flush=True)
    result = {"model": args.model, "attribute": args.attribute, "values": values, "chance": round(1 / len(values), 3),
              "lr": args.lr, "curve": curve}
    if args.output:
        formats.write_json(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
