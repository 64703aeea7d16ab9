"""The paper's config run as typed: config/multivent.yaml through the whole DAG (captions, teacher
labels, training data, stage 1, stage 2, reranking with the vLLM backend in the vLLM environment,
evaluation), with only the model ids changed to tiny local models and the data generated at the
paths the config names, in the MultiVENT 2.0 layout. Every rule's recorded settings are checked
against the reference method (tests/reference.py)."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from rankvideo.data import formats

from conftest import VLLM_PYTHON, copy_repo, snakemake
from reference import REFERENCE, differences
from videos import make_multivent_tree

# One test video: the config's 16 shards as typed, of which the one holding it is the only one that
# loads a model, so each system's scoring starts one vLLM engine (with n test videos, n of the 16
# shards would each start one). With the captions and the teacher: five engine starts in all.
TRAIN, TEST = ["101", "102", "205", "206"], ["17"]


def make_multivent_data(data: Path) -> None:
    make_multivent_tree(data / "videos", TRAIN + TEST, n_frames=8, rate=4)
    queries = {"train": {"t1": "a moving bar", "t2": "a gradient"}, "test": {"q1": "a bright bar", "q2": "colours"}}
    runs = {"train": {"t1": dict(zip(TRAIN, [4, 3, 2, 1])), "t2": dict(zip(reversed(TRAIN), [4, 3, 2, 1]))},
            "test": {"q1": {"17": 2.0}, "q2": {"17": 1.0}}}
    qrels = {"train": "t1 0 101 1\nt1 0 205 0\nt2 0 206 1\nt2 0 102 0\n", "test": "q1 0 17 1\nq2 0 17 2\n"}
    for split in ("train", "test"):
        (data / f"queries_{split}.tsv").write_text("".join(f"{q}\t{t}\n" for q, t in queries[split].items()))
        (data / f"qrels_{split}.txt").write_text(qrels[split])
        (data / f"first_stage_{split}.json").write_text(json.dumps(runs[split]))
    formats.write_jsonl(data / "asr.jsonl", [{"doc_id": v, "text": f"video {v} shows a bar"} for v in TRAIN + TEST])


def stage_settings(record: dict, stage: str) -> dict:
    """A training record's settings under the config's keys (train_stageN.key, train_stageN.video.key)."""
    settings = {**record["settings"], **record["settings"].pop("extra", {})}
    flat = {f"{stage}.{k}": v for k, v in settings.items()}
    flat.update({f"{stage}.video.{k}": settings[k] for k in ("fps", "max_frames", "tokens_per_frame")})
    return flat


@pytest.mark.vllm
def test_paper_config_runs_as_typed(tmp_path, tiny_models):
    if not VLLM_PYTHON.exists():
        pytest.skip(f"no vLLM environment at {VLLM_PYTHON} (make vllm-venv, or set RANKVIDEO_VLLM_PYTHON)")
    repo = copy_repo(tmp_path / "repo")
    make_multivent_data(repo / "data/multivent2")
    vlm, text = tiny_models.vlm(seed=1), tiny_models.text(seed=1)
    # only the model ids change: tiny folders for Qwen3-VL-8B, Qwen3-Omni and Qwen3-32B
    (repo / "models.yaml").write_text(yaml.safe_dump({"models": {"base": str(vlm), "captioner": str(vlm),
                                                                  "teacher": str(text)}}))
    env_before = dict(os.environ)
    os.environ["RANKVIDEO_VLLM_PYTHON"] = str(VLLM_PYTHON)
    try:
        snakemake(repo, "results/metrics.tsv", "results/effective_config.yaml", "--cores", "2",
                  "--configfile", "config/multivent.yaml", "models.yaml", timeout=2700)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    results = repo / "results"
    effective = yaml.safe_load((results / "effective_config.yaml").read_text())
    assert differences(effective) == {}
    table = pd.read_csv(results / "metrics.tsv", sep="\t").set_index("system")
    assert list(table.index) == ["first_stage", "base", "stage1", "stage2", "stage2+fusion"]
    assert (table["coverage"] == 1.0).all() and (table["n_queries"] == 2).all()
    # every rule ran with the reference's settings: the training records ...
    for stage in ("train_stage1", "train_stage2"):
        record = formats.read_json(results / f"models/stage{stage[-1]}/rankvideo_training.json")
        recorded = stage_settings(record, stage)
        expected = {k: v for k, v in REFERENCE.items() if k.startswith(stage + ".")}
        assert {k: recorded.get(k) for k in expected} == expected
    # ... the scoring jobs: the config's 16 shards, each in vLLM's environment with 2 fps, 32 frames of
    # 128 tokens; the test video scored for both queries by each system ...
    for system in ("base", "stage1", "stage2"):
        infos = sorted((results / f"rerank/{system}/shards").glob("*/run_info.json"))
        assert len(infos) == 16, infos
        for info_path in infos:
            info = formats.read_json(info_path)
            assert info["backend"] == "vllm" and info["video"]["max_frames"] == 32
            assert info["video"]["max_pixels"] == 128 * 32 * 32 and info["video"]["fps"] == 2.0
        predictions = formats.read_prediction_dir(results / f"rerank/{system}/predictions")
        assert {qid: sorted(scores) for qid, scores in predictions.items()} == {"q1": TEST, "q2": TEST}
    # ... the captions (16 frames at most, the captioner) and the teacher (top 20 of each query)
    captions = formats.read_jsonl(results / "captions/captions.jsonl")
    assert sorted(c["doc_id"] for c in captions) == sorted(TRAIN)
    assert all(c["meta"]["frames"] <= 16 for c in captions)
    labels = formats.read_jsonl(results / "teacher/teacher_labels.jsonl")
    assert len(labels) == 8  # 2 training queries x their 4 candidates (top 20)
    assert f"{VLLM_PYTHON} -m rankvideo.pipeline" in (results / "logs/rerank/stage2/0.log").read_text()


def test_a_vllm_step_names_a_missing_vllm_environment(tmp_path):
    from rankvideo import pipeline

    with pytest.raises(FileNotFoundError, match="/nowhere/python.*not a file"):
        pipeline.run_step("rerank", {}, "vllm", {"vllm_python": "/nowhere/python"}, tmp_path / "s.json")
