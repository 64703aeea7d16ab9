"""A researcher's own data, run as the README shows: config/example.yaml (videos, queries, qrels,
a first-stage run, hub models) reranked zero-shot and evaluated, with tiny local models standing in
for the hub ids and the videos in the MultiVENT 2.0 folder layout."""

import pandas as pd
import pytest
import yaml

from rankvideo.data import formats

from conftest import copy_repo, snakemake
from videos import make_multivent_tree

IDS = ["5", "17", "142", "250"]
MISSING = "999"  # in the first-stage run, in no folder: a recorded failure, counted in coverage


@pytest.mark.slow
def test_own_data_example_config_end_to_end(tmp_path, tiny_models):
    repo = copy_repo(tmp_path / "repo")
    data = repo / "data/example"
    make_multivent_tree(data / "videos", IDS)
    (data / "queries.tsv").write_text("q1\ta gradient with a moving bar\nq2\ta bright bar\n")
    (data / "qrels.txt").write_text("q1 0 5 1\nq1 0 142 0\nq2 0 250 1\nq2 0 17 1\n")
    (data / "run.trec").write_text("".join(
        f"{qid} Q0 {doc} {rank} {10 - rank} bm25\n"
        for qid, docs in {"q1": ["142", "5", "17", MISSING], "q2": ["5", "250", "17"]}.items()
        for rank, doc in enumerate(docs, 1)))
    base, other = tiny_models.vlm(seed=1), tiny_models.vlm(seed=2)
    # only the model ids change: the tiny folders stand in for Qwen/Qwen3-VL-8B-Instruct and hltcoe/RankVideo
    (repo / "models.yaml").write_text(yaml.safe_dump({"models": {"base": str(base), "rerankers": {"rankvideo": str(other)}}}))
    snakemake(repo, "--cores", "2", "--configfile", "config/example.yaml", "models.yaml", timeout=1500)

    out = repo / "results/example"
    table = pd.read_csv(out / "metrics.tsv", sep="\t").set_index("system")
    assert list(table.index) == ["first_stage", "base", "base+fusion", "rankvideo", "rankvideo+fusion"]
    assert (table["n_queries"] == 2).all()
    assert not (repo / "results/metrics.tsv").exists() and not (out / "models").exists()  # no training
    for system in ("base", "rankvideo"):
        summary = formats.read_json(out / f"rerank/{system}/summary.json")
        assert summary["videos_scored"] == len(IDS) and summary["videos_failed"] == 1
        failures = formats.read_jsonl(out / f"rerank/{system}/failures.jsonl")
        assert [f["video_id"] for f in failures] == [MISSING]
        # the paper's video setting reached the scoring job (2 fps, 32 frames of 128 tokens)
        info = formats.read_json(next((out / f"rerank/{system}/shards").glob("*/run_info.json")))
        assert info["video"]["fps"] == 2.0 and info["video"]["max_frames"] == 32
        assert info["video"]["max_pixels"] == info["video"]["min_pixels"] == 128 * 32 * 32
    assert table.loc["base", "coverage"] < 1.0  # the missing video's pair was not scored
