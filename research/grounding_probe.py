"""Can stage 2 learn to ground an attribute? Train it on clean single-attribute queries over fresh videos.

    python research/grounding_probe.py [--workdir .] [--model results/models/stage1]
        [--attributes colour,count] [--steps 1200] [--videos 3000] [--held-out 200] [--linear-probe]
        [--output-dir research-out/grounding] [--output probe.json]

The pipeline's stage-2 data mixes every attribute in every query and reuses the corpus's 150 videos;
this probe takes both away. It renders ``--videos`` new videos with the run's benchmark settings
(``dataset.synthetic``, ids ``g0001…``, in no corpus or query), builds stage-2 query groups whose
query names one attribute drawn from ``--attributes`` ("something red": the positive has it, the
``--negatives`` negatives do not), trains stage 2 from ``--model`` for ``--steps`` steps with the
run's ``train_stage2`` settings, and reports, on the ``--held-out`` videos it never trained on, the
AUC of every single-attribute query per attribute (as ``attribute_probe.py``; 0.5 = blind to it).

``--linear-probe`` first asks whether the starting model's hidden states already carry each attribute:
a ridge read-out (fit on 800 training videos, accuracy on the held-out ones; chance 1/3 for count
and 1/4 for the rest) at the answer position of the reranking prompt and of the mean and the maximum
over the video tokens, per language-model layer (0 = the input embeddings).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from attribute_probe import attribute_aucs


def build_groups(videos: list[dict], attributes: list[str], n_groups: int, negatives: int, seed: int,
                 video_path) -> list[dict]:
    """Stage-2 records: per group one single-attribute query, a positive that has the value and
    ``negatives`` videos that do not."""
    from rankvideo.demo import synthetic

    rng = random.Random(seed)
    lacking = {(attr, value): [v for v in videos if v[attr] != value]  # the negatives' pool, per value
               for attr in attributes for value in {v[attr] for v in videos}}
    records = []
    for i in range(n_groups):
        attr = rng.choice(attributes)
        positive = rng.choice(videos)
        query = synthetic.describe({attr: positive[attr]})
        others = lacking[(attr, positive[attr])]
        for video, relevant in [(positive, True)] + [(v, False) for v in rng.sample(others, negatives)]:
            records.append({"query_id": f"g{i:05d}", "query": query, "doc_id": video["doc_id"],
                            "videos": [str(video_path(video["doc_id"]))], "true_label": 2 if relevant else 0,
                            "teacher_p_yes": None, "teacher_label": None, "evidence": {"caption": "", "asr": ""},
                            "positive": relevant})
    return records


def linear_probe(model: str, videos: list[dict], train_ids: set, loaded: dict, prompt_variant: str) -> dict:
    """{attribute: {readout: [held-out accuracy per layer]}} of a ridge read-out of the hidden states."""
    import torch

    from rankvideo.backends.hf import HFBackend

    backend = HFBackend(model, prompt_variant=prompt_variant, answer_tokens="single")
    video_pad = backend.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    features = {}
    for doc, frames in loaded.items():
        inputs = backend._processor_inputs([backend._render("something")], frames)
        with torch.inference_mode():
            hidden = backend.model.model(**inputs, use_cache=False, output_hidden_states=True).hidden_states
        mask = inputs["input_ids"][0] == video_pad
        features[doc] = np.stack([np.stack([h[0, -1].float().cpu().numpy(), h[0, mask].mean(0).float().cpu().numpy(),
                                            h[0, mask].max(0).values.float().cpu().numpy()]) for h in hidden])
    train = [v for v in videos if v["doc_id"] in train_ids and v["doc_id"] in features]
    test = [v for v in videos if v["doc_id"] not in train_ids and v["doc_id"] in features]
    result = {}
    for attr in ("count", "colour", "shape", "motion", "background"):
        labels = sorted({str(v[attr]) for v in videos})
        y_train = np.eye(len(labels))[[labels.index(str(v[attr])) for v in train]]
        y_test = np.array([labels.index(str(v[attr])) for v in test])
        result[attr] = {}
        for k, readout in enumerate(("answer_position", "video_mean", "video_max")):
            accuracies = []
            for layer in range(features[train[0]["doc_id"]].shape[0]):
                a = np.stack([features[v["doc_id"]][layer, k] for v in train])
                b = np.stack([features[v["doc_id"]][layer, k] for v in test])
                mean, std = a.mean(0), a.std(0) + 1e-6
                a, b = (a - mean) / std, (b - mean) / std
                weights = np.linalg.solve(a.T @ a + 10.0 * np.eye(a.shape[1]), a.T @ y_train)
                accuracies.append(round(float((np.argmax(b @ weights, 1) == y_test).mean()), 3))
            result[attr][readout] = accuracies
    return result


def probe_set(synthetic_settings: dict, seed: int, n: int, out: Path) -> Path:
    """``out/videos-seed{seed}-n{n}``: ``n`` videos rendered with the run's benchmark settings and
    ``seed``, rendered once. The set is rendered in a staging folder and moved into place, so that
    probes started together never read a half-written set or clash over its temporary files."""
    from rankvideo.demo import synthetic

    folder = out / f"videos-seed{seed}-n{n}"
    out.mkdir(parents=True, exist_ok=True)
    if (folder / "videos.jsonl").exists():
        return folder
    cfg = synthetic.SyntheticConfig.from_dict({**synthetic_settings, "seed": seed})
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=out))
    synthetic.render_set(cfg, np.random.SeedSequence(seed), n, staging, prefix="g")
    try:
        staging.rename(folder)
    except OSError:
        shutil.rmtree(staging)
        if not (folder / "videos.jsonl").exists():
            raise SystemExit(f"{folder} exists without videos.jsonl (an interrupted render?): remove it") from None
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=".", help="the pipeline's root (holds results/ and config/)")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--model", default="results/models/stage1", help="the model stage 2 starts from")
    parser.add_argument("--attributes", default="count,colour,shape,motion,background",
                        help="comma-separated attributes the training queries name")
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--videos", type=int, default=3000)
    parser.add_argument("--held-out", type=int, default=200)
    parser.add_argument("--groups", type=int, default=6000)
    parser.add_argument("--negatives", type=int, default=3)
    parser.add_argument("--seed", type=int, default=99, help="seed of the probe's videos and groups")
    parser.add_argument("--linear-probe", action="store_true")
    parser.add_argument("--output-dir", default="research-out/grounding")
    parser.add_argument("--output")
    args = parser.parse_args(argv)

    import torch

    from rankvideo import VLMReranker, logs
    from rankvideo.data import formats
    from rankvideo.demo import synthetic
    from rankvideo.config import load as load_config
    from rankvideo.training.stage2 import train
    from rankvideo.training.common import TrainSettings
    from rankvideo.training.losses import LossWeights
    from rankvideo.video import load_video

    logs.setup()
    attributes = [a for a in args.attributes.split(",") if a]
    unknown = sorted(set(attributes) - set(synthetic.ATTRIBUTES))
    if unknown:
        parser.error(f"--attributes: unknown {', '.join(unknown)}; known: {', '.join(synthetic.ATTRIBUTES)}")
    if not 0 < args.held_out < args.videos:
        parser.error("--held-out must be between 0 and --videos")
    root = Path(args.workdir)
    config = load_config(root / args.config)
    out = Path(args.output_dir)
    folder = probe_set(config["dataset"]["synthetic"], args.seed, args.videos, out)
    videos = list(formats.read_jsonl(folder / "videos.jsonl"))
    train_videos, held_out = videos[:-args.held_out], videos[-args.held_out:]
    video_path = lambda doc: folder / "videos" / f"{doc}.mp4"  # noqa: E731

    section = config["train_stage2"]
    settings = TrainSettings.from_config({**section, "max_steps": args.steps, "save_steps": max(args.steps, 1)},
                                         config["seed"])
    prompt_variant = config["rerank"].get("prompt_variant", "default")
    loaded = {v["doc_id"]: load_video(str(video_path(v["doc_id"])), settings.video()) for v in held_out}
    result: dict = {"model": args.model, "attributes_trained": attributes, "steps": args.steps,
                    "videos": args.videos, "held_out": args.held_out, "seed": args.seed}
    model = str(root / args.model)
    if args.linear_probe:
        sample = random.Random(args.seed).sample(train_videos, min(800, len(train_videos)))
        loaded_all = {**loaded, **{v["doc_id"]: load_video(str(video_path(v["doc_id"])), settings.video()) for v in sample}}
        result["linear_probe"] = linear_probe(model, videos, {v["doc_id"] for v in sample}, loaded_all, prompt_variant)

    tag = hashlib.sha256(str(Path(model).resolve()).encode()).hexdigest()[:8]  # one run folder per starting model
    run = out / f"{Path(model).name}-{tag}-{'-'.join(attributes)}-{args.steps}"
    data = run.with_suffix(".jsonl")
    formats.write_jsonl(data, build_groups(train_videos, attributes, args.groups, args.negatives, args.seed, video_path))
    torch.manual_seed(args.seed)
    train(model, data, None, run, settings, LossWeights.from_config(section), num_negs=section["num_negs"],
          prompt_variant=prompt_variant)
    reranker = VLMReranker(str(run), prompt_variant=prompt_variant, answer_tokens="single")
    result["held_out_auc"] = {a: round(row["mean_auc"], 3) for a, row in attribute_aucs(
        reranker, {v["doc_id"]: v for v in held_out}, loaded).items()}

    if "linear_probe" in result:
        print(f"linear read-out of {args.model} (held-out accuracy per layer):")
        for attr, rows in result["linear_probe"].items():
            print(f"  {attr:<10} " + "  ".join(f"{k} {' '.join(f'{x:.2f}' for x in v)}" for k, v in rows.items()))
    print(f"stage 2 from {args.model}, {args.steps} steps on single-attribute queries over {', '.join(attributes)}:")
    print("  held-out AUC  " + "  ".join(f"{a} {x:.3f}" for a, x in result["held_out_auc"].items()))
    if args.output:
        formats.write_json(args.output, result)
    else:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
