"""How far a video-only reranker gets when it perceives some attributes perfectly, on a finished
synthetic-benchmark run.

    python research/attribute_oracle.py [--workdir .] [--config config/config.yaml] [--draws 20]
        [--descriptions results/descriptions/descriptions.jsonl]

For each subset of attributes, every first-stage candidate of a test query is scored by how many of
the query's attributes in that subset the video has, plus a random tie-break (the reranker is
blind to the others and has no text); nDCG@10 is averaged over ``--draws`` tie-breaks and printed
beside the first stage's. ``--descriptions FILE`` adds a text-only scorer: the query's attributes
that the video's caption in FILE names (read back by ``caption_probe.read_attributes``), the words
a stage-2 prompt with descriptions holds. The test queries' attributes are drawn again from the benchmark's seed
and checked against ``queries_test.tsv`` word for word.
"""

from __future__ import annotations

import argparse
import itertools
import random
from pathlib import Path


def test_attributes(root: Path, config_path: str, overlays=()) -> tuple[dict, list]:
    """({test qid: {attribute: value}}, the benchmark's videos) of the run in ``root``, drawn again
    from its config (``config_path`` with ``overlays`` laid over it, relative to ``root``) and checked
    against ``results/benchmark/queries_test.tsv`` word for word."""
    import numpy as np
    import yaml

    from rankvideo import config
    from rankvideo.data import formats
    from rankvideo.demo.synthetic import SyntheticConfig, describe, draw_videos, make_queries

    def merge(into: dict, new: dict) -> None:  # as Snakemake lays --configfile files over each other
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    cfg: dict = {}
    for path in [config_path, *overlays]:
        merge(cfg, yaml.safe_load((root / path).read_text()) or {})
    synthetic = SyntheticConfig.from_dict(config.validate(cfg)["dataset"]["synthetic"])
    catalogue_seed, query_seed = np.random.SeedSequence(synthetic.seed).spawn(2)
    videos = draw_videos(synthetic, np.random.default_rng(catalogue_seed))
    _, test = make_queries(videos, synthetic, np.random.default_rng(query_seed))
    texts = formats.read_queries(root / "results/benchmark/queries_test.tsv")
    if {q: describe(a) for q, a in test.items()} != texts:
        raise SystemExit("the test queries drawn from the config differ from results/benchmark/queries_test.tsv: "
                         "pass the run's config (and --overlay files)")
    return test, videos


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=".", help="the pipeline's root (holds results/ and config/)")
    parser.add_argument("--config", default="config/config.yaml", help="the run's config (relative to --workdir)")
    parser.add_argument("--overlay", action="append", default=[], help="config files laid over --config, in order")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--descriptions", help="also score with the attributes read back from these captions "
                                               "(e.g. results/descriptions/descriptions.jsonl) instead of the true ones")
    args = parser.parse_args(argv)

    import numpy as np

    from rankvideo.data import formats
    from rankvideo.evaluation.evaluate import evaluate_run
    from rankvideo.demo.synthetic import ATTRIBUTES

    root = Path(args.workdir)
    test, videos = test_attributes(root, args.config, args.overlay)
    attributes = {v.video_id: v.attributes() for v in videos}
    first_stage = formats.read_run(root / "results/first_stage/test.json")
    qrels = formats.read_qrels(root / "results/benchmark/qrels.txt")
    qrels = {q: qrels[q] for q in test}
    measure = "ndcg_cut_10"

    def score(run) -> float:
        per_query = evaluate_run(run, qrels, [10])
        return float(np.mean([per_query[q][measure] for q in test]))

    print(f"first stage: {score({q: first_stage[q] for q in test}):.3f}")
    for size in range(1, len(ATTRIBUTES) + 1):
        for subset in itertools.combinations(ATTRIBUTES, size):
            values = []
            for draw in range(args.draws):
                rng = random.Random(draw)
                run = {q: {d: sum(attributes[d][a] == v for a, v in attrs.items() if a in subset) + 0.5 * rng.random()
                           for d in first_stage[q]} for q, attrs in test.items()}
                values.append(score(run))
            print(f"{' + '.join(subset)}: {np.mean(values):.3f}")
    if args.descriptions:  # a text matcher: the query's attributes that the video's description names
        from caption_probe import read_attributes

        read = {doc: read_attributes(text) for doc, text in formats.read_id_text_jsonl(root / args.descriptions).items()}
        values = []
        for draw in range(args.draws):
            rng = random.Random(draw)
            run = {q: {d: sum(read[d][a] == v for a, v in attrs.items()) + 0.5 * rng.random() for d in first_stage[q]}
                   for q, attrs in test.items()}
            values.append(score(run))
        print(f"all five, read from {args.descriptions}: {np.mean(values):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
