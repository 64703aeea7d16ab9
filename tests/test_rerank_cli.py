"""The rerank CLI on a folder of assorted real videos (containers, codecs, sizes, broken files),
after an interruption, and with bad input."""

import os
import signal
import subprocess
import sys
import time

import pytest

from rankvideo.data import formats
from videos import make_test_videos


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("rerank")
    model = tiny_models.vlm(seed=1)
    videos = make_test_videos(root / "videos")
    queries = {"q1": "a red circle", "q2": "something moving left", "q3": "two blue squares on a white background"}
    formats.write_queries(root / "queries.tsv", queries)
    v2q = {vid: ["q1", "q2"] for vid in videos}
    v2q[sorted(videos)[0]].append("q-missing")  # not in the query file: reported, not scored
    v2q["../escape"] = ["q3"]  # would leave the video folder: refused
    formats.write_json(root / "v2q.json", v2q)
    return root, model, videos


def run_cli(root, model, out, *extra, check=None):
    cmd = [sys.executable, "-m", "rankvideo.rerank", "--model", str(model), "--video2queries", str(root / "v2q.json"),
           "--query-mapping", str(root / "queries.tsv"), "--video-dir", str(root / "videos"), "--output-dir", str(out),
           "--fps", "2", "--max-frames", "8", "--tokens-per-frame", "4", "--no-progress", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


def outputs(out):
    return {p.name.split("_reranking_")[0]: formats.read_video_scores(p) for p in out.glob("*_reranking_*.json")}


def test_assorted_videos_scored_broken_ones_recorded(setup, tmp_path):
    root, model, videos = setup
    out = tmp_path / "out"
    result = run_cli(root, model, out, check=0)
    scored = outputs(out)
    good = {vid for vid, (_, ok) in videos.items() if ok}
    bad = {vid for vid, (_, ok) in videos.items() if not ok}
    assert set(scored) == good
    for vid in good:
        assert set(scored[vid][vid]) == {"q1", "q2"}
        assert set(scored[vid][vid]["q1"]) == {"logprob_yes", "logprob_no", "logit_delta", "p_yes"}
    failures = {r["video_id"]: r for r in formats.read_jsonl(out / "failures.jsonl")}
    assert set(failures) == bad | {"../escape"}
    assert failures["empty"]["reason"] == "empty file"
    assert "no video stream" in failures["audio_only"]["reason"]
    assert failures["../escape"]["reason"] == "unsafe id: contains '/'"
    assert "pairs scored" in result.stdout and f"failed {len(bad) + 1}" in result.stdout
    assert "q-missing" in result.stderr  # unknown query ids are reported
    summary = formats.read_json(out / "summary.json")
    # each video decoded at most once (files failing the probe never reach a decoder)
    assert len(good) <= summary["decodes"] <= len(good) + len(bad)
    assert summary["videos_decoded_twice"] == 0  # decoded in a background thread, still once each
    assert summary["seconds_total"] > 0 and "overlapped with scoring" in result.stdout
    assert summary["pairs_scored"] == 2 * len(good)
    # scores are the model's: the same pair gives the same score in a second folder, also when videos of
    # different sizes share a pass (--video-batch: float rounding apart), which run_info.json records
    again = tmp_path / "again"
    run_cli(root, model, again, "--id-start", "1", "--video-batch", "3", check=0)
    assert len(outputs(again)) >= len(good) - 1 and formats.read_json(again / "run_info.json")["scoring"]["video_batch"] == 3
    for vid, data in outputs(again).items():
        for qid, score in data[vid].items():
            assert score == pytest.approx(scored[vid][vid][qid], abs=1e-4)
    # decoded and prepared in worker processes (started while the model loads): the same scores and failures
    in_processes = tmp_path / "processes"
    run_cli(root, model, in_processes, "--decode-in", "processes", check=0)
    assert outputs(in_processes) == scored
    assert {r["video_id"]: r["reason"] for r in formats.read_jsonl(in_processes / "failures.jsonl")} == \
        {vid: r["reason"] for vid, r in failures.items()}


@pytest.mark.slow  # the command run two or three times, each a fresh process (about 40 s)
def test_interrupted_run_resumes_without_loss_or_duplicates(setup, tmp_path):
    root, model, videos = setup
    out = tmp_path / "out"
    cmd_env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "rankvideo.rerank", "--model", str(model), "--video2queries", str(root / "v2q.json"),
           "--query-mapping", str(root / "queries.tsv"), "--video-dir", str(root / "videos"), "--output-dir", str(out),
           "--fps", "2", "--max-frames", "8", "--tokens-per-frame", "4", "--no-progress"]
    process = subprocess.Popen(cmd, env=cmd_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("*_reranking_*.json"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    first = set(outputs(out))
    assert 3 <= len(first) < sum(ok for _, ok in videos.values()), "the kill must land mid-run"
    # a half-written file (as a non-atomic writer would leave) is repaired
    victim = sorted(out.glob("*_reranking_*.json"))[0]
    victim.write_text('{"broken": ')
    result = run_cli(root, model, out, check=0)
    assert "from an earlier run" in result.stdout
    summary = formats.read_json(out / "summary.json")
    assert summary["videos_already_done"] == len(first) - 1
    assert set(outputs(out)) == {vid for vid, (_, ok) in videos.items() if ok}
    ids = [r["video_id"] for r in formats.read_jsonl(out / "failures.jsonl")]
    assert len(ids) == len(set(ids))
    # run it a third time: nothing new, failures not duplicated
    run_cli(root, model, out, check=0)
    assert len(formats.read_jsonl(out / "failures.jsonl")) == len(ids)
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow  # the command run two or three times, each a fresh process (about 40 s)
def test_other_settings_refused_unless_restart(setup, tmp_path):
    root, model, _ = setup
    out = tmp_path / "out"
    run_cli(root, model, out, "--id-start", "2", "--id-end", "4", check=0)
    result = run_cli(root, model, out, "--id-start", "2", "--id-end", "4", "--fps", "1", check=2)
    assert "holds scores made with other settings" in result.stderr and "video" in result.stderr
    run_cli(root, model, out, "--id-start", "2", "--id-end", "4", "--fps", "1", "--restart", check=0)


@pytest.mark.slow  # the command run two or three times, each a fresh process (about 40 s)
def test_a_prompt_other_than_the_trained_one_is_warned_about(setup, tmp_path):
    import shutil

    root, model, _ = setup
    trained = tmp_path / "trained"
    shutil.copytree(model, trained)
    formats.write_json(trained / "rankvideo_training.json", {"stage": "stage2", "prompt_variant": "query_first"})
    result = run_cli(root, trained, tmp_path / "out", "--id-start", "2", "--id-end", "3", check=0)
    assert "was trained with the prompt variant 'query_first'; scoring it with 'default'" in result.stderr
    result = run_cli(root, trained, tmp_path / "out2", "--id-start", "2", "--id-end", "3",
                     "--prompt-variant", "query_first", check=0)
    assert "was trained with the prompt variant" not in result.stderr


def test_bad_inputs(setup, tmp_path):
    root, model, _ = setup
    (tmp_path / "bad.tsv").write_text("q1 no tab here\n")
    result = subprocess.run([sys.executable, "-m", "rankvideo.rerank", "--model", str(model), "--video2queries",
                             str(root / "v2q.json"), "--query-mapping", str(tmp_path / "bad.tsv"), "--video-dir",
                             str(root / "videos"), "--output-dir", str(tmp_path / "o")],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert result.returncode == 2 and "bad.tsv:1" in result.stderr
    # only unreadable videos: nothing could be scored -> exit 1
    formats.write_json(tmp_path / "v2q.json", {"empty": ["q1"], "text": ["q1"]})
    result = subprocess.run([sys.executable, "-m", "rankvideo.rerank", "--model", str(model), "--video2queries",
                             str(tmp_path / "v2q.json"), "--query-mapping", str(root / "queries.tsv"), "--video-dir",
                             str(root / "videos"), "--output-dir", str(tmp_path / "o2"), "--no-progress"],
                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert result.returncode == 1, result.stderr
    # a model that does not exist: one sentence, exit 2
    result = run_cli(root, tmp_path / "nowhere", tmp_path / "o3", check=2)
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr
