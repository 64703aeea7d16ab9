"""Captions and teacher CLIs on the tiny models, resumption after a kill, the training JSONL."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from rankvideo import prompts
from rankvideo.data import first_stage, formats, training_data
from rankvideo.demo.synthetic import SyntheticConfig, generate
from rankvideo.video import VideoResolver

ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(sys.path))


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("synth")
    generate(SyntheticConfig.from_dict({"n_videos": 12, "n_test_queries": 3, "n_train_queries": 10}), root / "bench")
    bench = root / "bench"
    first_stage.run_bm25_stage(bench / "queries_train.tsv", bench / "transcripts.jsonl", 6, root / "train.json",
                               root / "train.trec", root / "v2q.json")
    return {"root": root, "bench": bench, "vlm": tiny_models.vlm(seed=0), "text": tiny_models.text(seed=0)}


def captions_cmd(w, out, *extra):
    return [sys.executable, "-m", "rankvideo.generate_captions", "--video-root", str(w["bench"] / "videos"),
            "--output", str(out), "--model-name", str(w["vlm"]), "--ids", str(w["root"] / "v2q.json"), "--fps", "4",
            "--max-frames", "8", "--tokens-per-frame", "4", "--max-new-tokens", "8", "--batch-size", "2",
            "--no-progress", *extra]


def teacher_cmd(w, out, captions, *extra):
    return [sys.executable, "-m", "rankvideo.generate_reasoning", "--queries", str(w["bench"] / "queries_train.tsv"),
            "--candidates", str(w["root"] / "train.trec"), "--captions-jsonl", str(captions), "--asr-jsonl",
            str(w["bench"] / "transcripts.jsonl"), "--output", str(out), "--model-path", str(w["text"]), "--topk", "3",
            "--batch-size", "4", "--reasoning-maxlen", "8", "--no-progress", *extra]


def kill_when(cmd, path, lines):
    """Start ``cmd`` and SIGKILL it once ``path`` has ``lines`` lines."""
    process = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if path.exists() and path.read_text().count("\n") >= lines:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_captions_cli_resumes_after_kill(world, tmp_path):
    out = tmp_path / "captions.jsonl"
    kill_when(captions_cmd(world, out), out, 2)
    before = formats.read_jsonl(out)
    assert 2 <= len(before) < 12
    with open(out, "a") as handle:
        handle.write('{"doc_id": "v00')  # a torn last line, as a kill mid-write leaves
    result = subprocess.run(captions_cmd(world, out), env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    records = formats.read_jsonl(out, required=("doc_id", "text", "meta"))
    ids = [r["doc_id"] for r in records]
    assert len(ids) == len(set(ids)) == len(formats.read_video2queries(world["root"] / "v2q.json"))
    assert records[: len(before)] == before  # earlier records kept as they were
    assert f"already_done={len(before)}" in result.stdout


def test_teacher_cli_records_and_resume(world, tmp_path):
    captions = world["bench"] / "captions_reference.jsonl"
    out = tmp_path / "teacher.jsonl"
    kill_when(teacher_cmd(world, out, captions), out, 4)
    result = subprocess.run(teacher_cmd(world, out, captions), env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    records = formats.read_jsonl(out)
    keys = [(r["query_id"], r["doc_id"]) for r in records]
    assert len(keys) == len(set(keys)) == 10 * 3
    fields = {"query_id", "doc_id", "query", "evidence", "teacher_reasoning", "teacher_label", "teacher_p_yes",
              "teacher_logit_delta", "meta"}
    for r in records:
        assert set(r) == fields and set(r["evidence"]) == {"caption", "asr"} and {"rank", "score"} <= set(r["meta"])
        # never a made-up value: p_yes only where the teacher wrote <answer>
        assert (r["teacher_p_yes"] is None) == (r["meta"]["answer"] == "missing")
        assert r["teacher_label"] in (None, 0, 1)
    assert "answer_missing=" in result.stdout


def test_teacher_p_yes_read_after_answer(world):
    """The answer-position scoring on a forced teacher output: p_yes is sigmoid(logp yes - logp no)."""
    from rankvideo.backends.hf import HFTextBackend

    teacher = HFTextBackend(str(world["text"]))
    prompt = teacher.render(prompts.teacher_messages("a red circle", "A red circle moves left.", "red circle"))
    reasoning, head, label = prompts.parse_teacher_output("<think>it matches</think><answer>yes</answer>")
    assert (reasoning, head, label) == ("it matches", "<think>it matches</think><answer>", 1)
    assert prompts.parse_teacher_output("<think>hm</think>") == ("hm", None, None)
    assert prompts.parse_teacher_output("<answer>maybe</answer>")[2] is None
    (yes, no), = teacher.answer_logprobs([prompt + head])
    assert yes < 0 and no < 0 and yes != no


@pytest.mark.parametrize("problem", ["empty_caption", "unknown_query", "bad_trec"])
def test_teacher_bad_input_messages(world, tmp_path, problem):
    captions = tmp_path / "captions.jsonl"
    formats.write_jsonl(captions, formats.read_jsonl(world["bench"] / "captions_reference.jsonl"))
    candidates = world["root"] / "train.trec"
    expected = ""
    if problem == "empty_caption":
        rows = formats.read_jsonl(captions)
        first = formats.ranked(formats.read_trec_run(candidates)["train-001"])[0]
        for row in rows:
            if row["doc_id"] == first:
                row["text"] = "  "
        formats.write_jsonl(captions, rows)
        expected = "lack a caption"
    elif problem == "unknown_query":
        candidates = tmp_path / "c.trec"
        candidates.write_text("nope Q0 v0001 1 1.0 x\n")
        expected = "not in"
    else:
        candidates = tmp_path / "c.trec"
        candidates.write_text("train-001 Q0 v0001 1\n")
        expected = "c.trec:1: expected 6 fields"
    cmd = teacher_cmd(world, tmp_path / "t.jsonl", captions)
    cmd[cmd.index("--candidates") + 1] = str(candidates)
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr


def test_training_jsonl_matches_the_seed_format(world, tmp_path):
    bench, root = world["bench"], world["root"]
    teacher = tmp_path / "teacher.jsonl"
    formats.write_jsonl(teacher, [{"query_id": "train-001", "doc_id": formats.ranked(formats.read_run(root / "train.json")["train-001"])[0],
                                   "teacher_p_yes": 0.7, "teacher_label": 1}])
    report = training_data.build(bench / "queries_train.tsv", bench / "qrels.txt", root / "train.json", teacher,
                                 bench / "transcripts.jsonl", bench / "captions_reference.jsonl",
                                 VideoResolver(bench / "videos"), tmp_path / "out", depth=4, eval_fraction=0.2, seed=1,
                                 caption_source="reference")
    train = formats.read_jsonl(tmp_path / "out/train.jsonl")
    evaluation = formats.read_jsonl(tmp_path / "out/eval.jsonl")
    assert {r["query_id"] for r in train}.isdisjoint({r["query_id"] for r in evaluation})
    assert len({r["query_id"] for r in evaluation}) == 2 and len(train) + len(evaluation) == 10 * 4
    qrels = formats.read_qrels(bench / "qrels.txt")
    for r in train + evaluation:
        assert {"query_id", "query", "doc_id", "videos", "true_label", "teacher_p_yes", "evidence"} <= set(r)
        assert r["true_label"] == qrels[r["query_id"]][r["doc_id"]]
        assert os.path.exists(r["videos"][0]) and set(r["evidence"]) == {"caption", "asr"}
    assert sum(r["teacher_p_yes"] == 0.7 for r in train + evaluation) == 1
    stage1 = formats.read_jsonl(tmp_path / "out/stage1_train.jsonl") + formats.read_jsonl(tmp_path / "out/stage1_eval.jsonl")
    ids = [r["doc_id"] for r in stage1]
    assert len(ids) == len(set(ids)) == len({r["doc_id"] for r in train + evaluation})
    assert all(r["caption"].startswith(("A single", "Two", "Three")) for r in stage1)
    s = report["splits"]["train"]
    assert s["positives"] + s["negatives"] + s["unlabelled"] == s["examples"]
    assert (tmp_path / "out/report.md").read_text().startswith("# Training data report")
    assert all(r["positive"] == (r["true_label"] >= 1) for r in train + evaluation)


def test_positive_grade_two_makes_partial_matches_negatives(world, tmp_path):
    bench, root = world["bench"], world["root"]
    formats.write_jsonl(tmp_path / "teacher.jsonl", [])
    args = (bench / "queries_train.tsv", bench / "qrels.txt", root / "train.json", tmp_path / "teacher.jsonl",
            bench / "transcripts.jsonl", bench / "captions_reference.jsonl", VideoResolver(bench / "videos"))
    reports = {grade: training_data.build(*args, tmp_path / str(grade), depth=8, eval_fraction=0.0, seed=1,
                                          caption_source="reference", positive_grade=grade) for grade in (1, 2)}
    rows = {grade: formats.read_jsonl(tmp_path / str(grade) / "train.jsonl") for grade in (1, 2)}
    partial = [i for i, r in enumerate(rows[1]) if r["true_label"] == 1]
    assert partial, "the synthetic set has partial matches among the candidates"
    assert all(rows[1][i]["positive"] and rows[2][i]["positive"] is False for i in partial)
    assert all(r["positive"] == (r["true_label"] == 2) for r in rows[2])
    counts = {g: reports[g]["splits"]["train"] for g in (1, 2)}
    assert counts[2]["positives"] == counts[1]["positives"] - len(partial)
    assert "positives: true_label >= 2" in (tmp_path / "2" / "report.md").read_text()


def test_random_judged_candidates_are_seeded_and_outside_the_top(world, tmp_path):
    bench, root = world["bench"], world["root"]
    formats.write_jsonl(tmp_path / "teacher.jsonl", [])
    args = (bench / "queries_train.tsv", bench / "qrels.txt", root / "train.json", tmp_path / "teacher.jsonl",
            bench / "transcripts.jsonl", bench / "captions_reference.jsonl", VideoResolver(bench / "videos"))
    for name in ("a", "b"):
        training_data.build(*args, tmp_path / name, depth=3, eval_fraction=0.0, seed=5, caption_source="reference",
                            random_judged=2)
    rows = formats.read_jsonl(tmp_path / "a" / "train.jsonl")
    assert rows == formats.read_jsonl(tmp_path / "b" / "train.jsonl")
    run, qrels = formats.read_run(root / "train.json"), formats.read_qrels(bench / "qrels.txt")
    by_query: dict[str, list[str]] = {}
    for r in rows:
        by_query.setdefault(r["query_id"], []).append(r["doc_id"])
    for qid, docs in by_query.items():
        top = formats.ranked(run[qid])[:3]
        assert docs[:3] == top and len(docs) == 5 and len(set(docs)) == 5
        assert all(d not in top and d in qrels[qid] for d in docs[3:])
    assert "+ 2 random judged" in (tmp_path / "a" / "report.md").read_text()


def test_perception_set_joins_stage1_training_only(world, tmp_path):
    bench, root = world["bench"], world["root"]
    formats.write_jsonl(tmp_path / "teacher.jsonl", [])
    perception = tmp_path / "perception"
    (perception / "videos").mkdir(parents=True)
    for i, source in enumerate(sorted((bench / "videos").iterdir())[:3]):
        shutil.copy(source, perception / "videos" / f"p{i}.mp4")
    formats.write_jsonl(perception / "captions.jsonl", [{"doc_id": f"p{i}", "text": f"caption {i}"} for i in range(3)])
    args = (bench / "queries_train.tsv", bench / "qrels.txt", root / "train.json", tmp_path / "teacher.jsonl",
            bench / "transcripts.jsonl", bench / "captions_reference.jsonl", VideoResolver(bench / "videos"))
    kwargs = dict(depth=4, eval_fraction=0.2, seed=1, caption_source="reference")
    plain = training_data.build(*args, tmp_path / "plain", **kwargs)
    report = training_data.build(*args, tmp_path / "out", **kwargs, perception_captions=perception / "captions.jsonl",
                                 perception_videos=VideoResolver(perception / "videos"))
    rows = formats.read_jsonl(tmp_path / "out/stage1_train.jsonl")
    assert rows[:-3] == formats.read_jsonl(tmp_path / "plain/stage1_train.jsonl")
    assert [(r["doc_id"], r["caption"], r["caption_source"]) for r in rows[-3:]] == \
        [(f"p{i}", f"caption {i}", "perception") for i in range(3)]
    assert all(os.path.exists(r["videos"][0]) for r in rows)
    assert formats.read_jsonl(tmp_path / "out/stage1_eval.jsonl") == formats.read_jsonl(tmp_path / "plain/stage1_eval.jsonl")
    assert formats.read_jsonl(tmp_path / "out/train.jsonl") == formats.read_jsonl(tmp_path / "plain/train.jsonl")
    assert report["splits"]["train"]["stage1_videos"] == plain["splits"]["train"]["stage1_videos"] + 3

    (perception / "videos" / "p1.mp4").unlink()
    with pytest.raises(ValueError, match=r"captions.jsonl: perception video 'p1': missing file"):
        training_data.build(*args, tmp_path / "bad", **kwargs, perception_captions=perception / "captions.jsonl",
                            perception_videos=VideoResolver(perception / "videos"))
    formats.write_jsonl(perception / "clash.jsonl", [{"doc_id": rows[0]["doc_id"], "text": "x"}])
    with pytest.raises(ValueError, match=rf"clash.jsonl: perception video '{rows[0]['doc_id']}' is also a candidate"):
        training_data.build(*args, tmp_path / "bad", **kwargs, perception_captions=perception / "clash.jsonl",
                            perception_videos=VideoResolver(perception / "videos"))
