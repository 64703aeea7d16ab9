"""The reference README's commands, typed as written: only paths and model ids changed (a tiny local
Qwen3-VL and Qwen3 text model, rankvideo.demo.tiny_model; generated videos in the MultiVENT 2.0
layout ``{dir}/{(id//100)+1:06d}/{id}.mp4``), plus the reference's own size flags (--max-new-tokens,
--reasoning-maxlen, --epochs, --grad-accum, --batch-size) to keep the runs tiny. Chained as a user
would: generate_captions -> generate_reasoning -> train_perception -> train_reranker -> rerank ->
evaluate on the folder rerank wrote. Each step is a real subprocess ``python -m rankvideo.<module>``
run in the data root, so the relative paths read as in the README.

Beyond the reference: rerank takes a first-stage run directly (--first-stage FILE --depth K) and
VLMReranker.rank(query, video_paths, top_k) ranks best first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rankvideo.data import formats
from rankvideo.video import VideoError, VideoResolver
from videos import X264, encode

REPO = Path(__file__).resolve().parents[1]
#: MultiVENT 2.0 ids (numeric): shards 000001, 000002, 000003
VIDEO_IDS = ["7", "101", "102", "250"]
QUERIES = {"q1": "a red circle moving right", "q2": "two blue squares on a white background"}
QRELS = {"q1": {"101": 1, "7": 0, "250": 0}, "q2": {"250": 1, "102": 0, "101": 0}}
FIRST_STAGE = {"q1": {"7": 0.9, "101": 0.8, "250": 0.7, "102": 0.6},
               "q2": {"101": 0.9, "250": 0.8, "102": 0.7, "7": 0.5}}


def multivent_path(video_dir: Path, video_id: str) -> Path:
    return video_dir / f"{int(video_id) // 100 + 1:06d}" / f"{video_id}.mp4"


def cli(root: Path, module: str, *args: str, check: int | None = 0) -> subprocess.CompletedProcess:
    """``python -m rankvideo.<module> args`` in ``root`` (offline), this worktree's package first."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(REPO), *sys.path]))
    result = subprocess.run([sys.executable, "-m", f"rankvideo.{module}", *args], cwd=root, env=env,
                            capture_output=True, text=True, timeout=900)
    if check is not None:
        assert result.returncode == check, (f"{module} {' '.join(args)}: exit {result.returncode}\n"
                                            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_models):
    """Tiny models, four videos in the MultiVENT layout and the reference's data files under data/."""
    root = tmp_path_factory.mktemp("reference")
    models = {"vlm": tiny_models.vlm(seed=1), "text": tiny_models.text(seed=1)}
    for n, video_id in enumerate(VIDEO_IDS):
        encode(multivent_path(root / "videos", video_id), codec="libx264", width=64, height=48, n_frames=8 + 2 * n,
               rate=4, options=X264)
    data = root / "data"
    formats.write_queries(data / "queries.tsv", QUERIES)
    formats.write_qrels(data / "qrels.txt", QRELS)
    formats.write_first_stage_json(data / "first_stage_results.json", FIRST_STAGE)
    formats.write_trec_run(data / "candidates.trec", FIRST_STAGE, tag="firststage")
    formats.write_json(data / "video2queries.json", formats.video2queries_from_run(FIRST_STAGE))
    return root, models


def reference_training_jsonl(root: Path, teacher_jsonl: Path, qids: set[str]) -> list[dict]:
    """The reference's training records (README "Training Data (JSONL)"): the teacher's records with
    the qrels label and the video path, one per (query, video) pair."""
    records = []
    for record in formats.read_jsonl(teacher_jsonl):
        if record["query_id"] in qids:
            doc = record["doc_id"]
            records.append({**record, "videos": [str(multivent_path(root / "videos", doc))],
                            "true_label": QRELS[record["query_id"]].get(doc, 0)})
    return records


@pytest.mark.slow
def test_reference_readme_commands_chained(world):
    root, models = world
    vlm, text = str(models["vlm"]), str(models["text"])

    # --- Generate Video Captions: every video of the MultiVENT tree (two folder levels)
    result = cli(root, "generate_captions", "--video-root", "videos", "--output", "data/captions.jsonl",
                 "--model-name", vlm, "--max-new-tokens", "24")
    captions = formats.read_id_text_jsonl(root / "data" / "captions.jsonl")
    assert sorted(captions) == sorted(VIDEO_IDS), result.stdout + result.stderr
    assert all(text.strip() for text in captions.values())

    # --- Generate Teacher Reasoning Labels
    cli(root, "generate_reasoning", "--queries", "data/queries.tsv", "--candidates", "data/candidates.trec",
        "--captions-jsonl", "data/captions.jsonl", "--output", "data/teacher_labels.jsonl", "--model-path", text,
        "--topk", "20", "--reasoning-maxlen", "16")
    teacher = formats.read_jsonl(root / "data" / "teacher_labels.jsonl")
    assert len(teacher) == sum(len(docs) for docs in FIRST_STAGE.values())
    assert all(r["evidence"]["caption"] == captions[r["doc_id"]] for r in teacher)

    # the reference's training JSONL (query, video, label, teacher score, evidence.caption): q1 trains, q2 evaluates
    formats.write_jsonl(root / "data" / "ranking_data.jsonl",
                        reference_training_jsonl(root, root / "data" / "teacher_labels.jsonl", {"q1"}))
    formats.write_jsonl(root / "data" / "ranking_eval.jsonl",
                        reference_training_jsonl(root, root / "data" / "teacher_labels.jsonl", {"q2"}))

    # --- Stage 1: the same JSONL (evidence.caption, one example per doc_id), as the reference's stage 1 reads it
    result = cli(root, "train_perception", "--model", vlm, "--train-data", "data/ranking_data.jsonl",
                 "--eval-data", "data/ranking_eval.jsonl", "--output-dir", "outputs/stage1",
                 "--epochs", "1", "--grad-accum", "2")
    record = formats.read_json(root / "outputs" / "stage1" / "rankvideo_training.json")
    assert record["stage"] == "stage1"
    # four distinct videos in the training file (q1's four candidates): two optimizer steps of two examples
    history = formats.read_json(root / "outputs" / "stage1" / "loss_history.json")
    assert history[-1]["step"] == 2 and any("eval_loss" in h for h in history), history

    # --- Stage 2 (the reference names its stage-1 folder perception-TIMESTAMP; here it is the --output-dir)
    cli(root, "train_reranker", "--model", "outputs/stage1", "--train-data", "data/ranking_data.jsonl",
        "--eval-data", "data/ranking_eval.jsonl", "--output-dir", "outputs/stage2",
        "--epochs", "1", "--batch-size", "1", "--grad-accum", "1")
    assert formats.read_json(root / "outputs" / "stage2" / "rankvideo_training.json")["stage"] == "stage2"

    # --- Reranking First-Stage Results: MultiVENT ids found without a layout flag
    result = cli(root, "rerank", "--model", "outputs/stage2", "--video2queries", "data/video2queries.json",
                 "--query-mapping", "data/queries.tsv", "--video-dir", "videos", "--output-dir", "outputs/reranking")
    out = root / "outputs" / "reranking"
    scored = {p.name.split("_reranking_")[0] for p in out.glob("*_reranking_*.json")}
    assert scored == set(VIDEO_IDS), result.stdout + result.stderr
    assert not (out / "failures.jsonl").exists() or not formats.read_jsonl(out / "failures.jsonl")
    assert (out / "run_info.json").exists() and (out / "summary.json").exists()

    # --- Evaluation on the folder rerank just wrote (its run_info.json / summary.json are not score files)
    result = cli(root, "evaluate", "--pred-dir", "outputs/reranking", "--first-stage", "data/first_stage_results.json",
                 "--qrels", "data/qrels.txt")
    assert "ndcg" in result.stdout.lower(), result.stdout
    # every pair of the folder is evaluated
    assert {qid: set(docs) for qid, docs in formats.read_prediction_dir(out).items()} == \
        {qid: set(docs) for qid, docs in FIRST_STAGE.items()}

    # --- "Reproducing Results" types rerank without --query-mapping (the reference reads it from config.py)
    result = cli(root, "rerank", "--model", "outputs/stage2", "--video2queries", "data/video2queries.json",
                 "--video-dir", "videos", "--output-dir", "outputs/reranking2", check=2)
    assert "--query-mapping" in result.stderr

    # --- beyond the reference: the first-stage run directly, top 2 of each query; same scores as above
    for run_file in ("data/candidates.trec", "data/first_stage_results.json"):
        direct = root / "outputs" / f"direct-{Path(run_file).suffix[1:]}"
        cli(root, "rerank", "--model", "outputs/stage2", "--first-stage", run_file, "--depth", "2",
            "--query-mapping", "data/queries.tsv", "--video-dir", "videos", "--output-dir", str(direct))
        top2 = formats.video2queries_from_run(FIRST_STAGE, 2)
        expected = {qid: {doc: pytest.approx(formats.read_prediction_dir(out)[qid][doc], abs=1e-4)  # other batches
                          for doc, qids in top2.items() if qid in qids} for qid in FIRST_STAGE}
        assert formats.read_prediction_dir(direct) == expected


def test_flat_folder_still_works_and_a_missing_id_says_where_it_looked(world, tmp_path):
    root, models = world
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "101.mp4").symlink_to(multivent_path(root / "videos", "101"))
    formats.write_json(tmp_path / "v2q.json", {"101": ["q1"], "555": ["q1"], "clip_a": ["q1"]})
    result = cli(root, "rerank", "--model", str(models["vlm"]), "--video2queries", str(tmp_path / "v2q.json"),
                 "--query-mapping", "data/queries.tsv", "--video-dir", str(flat), "--output-dir", str(tmp_path / "out"),
                 "--max-frames", "4", "--no-progress")
    assert [p.name.split("_reranking_")[0] for p in (tmp_path / "out").glob("*_reranking_*.json")] == ["101"]
    failures = {r["video_id"]: r for r in formats.read_jsonl(tmp_path / "out" / "failures.jsonl")}
    assert set(failures) == {"555", "clip_a"}
    numeric = failures["555"]["reason"]
    assert f"{flat}/555.{{mp4," in numeric and f"{flat}/000006/555.mp4" in numeric  # both layouts it tried
    assert "--video-dir" in numeric and "--video-index" in numeric
    assert "000" not in failures["clip_a"]["reason"]  # not numeric: the MultiVENT path is not tried
    assert "555" in result.stderr
    # --depth belongs to --first-stage; the two ways of naming candidates exclude each other
    result = cli(root, "rerank", "--model", str(models["vlm"]), "--video2queries", str(tmp_path / "v2q.json"),
                 "--depth", "5", "--query-mapping", "data/queries.tsv", "--video-dir", str(flat),
                 "--output-dir", str(tmp_path / "out2"), check=2)
    assert "only with --first-stage" in result.stderr and "Traceback" not in result.stderr
    result = cli(root, "rerank", "--model", str(models["vlm"]), "--video2queries", str(tmp_path / "v2q.json"),
                 "--first-stage", "data/candidates.trec", "--query-mapping", "data/queries.tsv",
                 "--video-dir", str(flat), "--output-dir", str(tmp_path / "out2"), check=2)
    assert "not allowed with argument" in result.stderr


def test_rank_returns_videos_best_first(world):
    from rankvideo import VLMReranker

    root, models = world
    paths = [str(multivent_path(root / "videos", v)) for v in VIDEO_IDS]
    reranker = VLMReranker(model_path=str(models["vlm"]), cache_dir=None, max_frames=4)
    ranked = reranker.rank(QUERIES["q1"], paths)
    scores = reranker.score_batch(queries=[QUERIES["q1"]] * len(paths), video_paths=paths)  # the README's call
    assert all(0 < s["p_yes"] < 1 and "logit_delta" in s for s in scores)
    by_path = {p: s["logit_delta"] for p, s in zip(paths, scores)}
    assert sorted(r["video_path"] for r in ranked) == sorted(paths)
    assert [r["rank"] for r in ranked] == [1, 2, 3, 4]
    assert [r["logit_delta"] for r in ranked] == sorted(by_path.values(), reverse=True)
    assert all(r["logit_delta"] == by_path[r["video_path"]] for r in ranked)
    top = reranker.rank(QUERIES["q1"], paths, top_k=2)
    assert top == ranked[:2]
    with pytest.raises(ValueError, match="listed twice"):
        reranker.rank(QUERIES["q1"], paths + paths[:1])


# ----------------------------------------------------------------------------- readers (no model)


def test_resolver_auto_finds_flat_then_multivent_and_refuses_unsafe_ids(tmp_path):
    (tmp_path / "000002").mkdir()
    (tmp_path / "000002" / "150.mp4").write_bytes(b"x")
    (tmp_path / "150.webm").write_bytes(b"x")
    (tmp_path / "000003").mkdir()
    (tmp_path / "000003" / "299.mp4").write_bytes(b"x")
    resolver = VideoResolver(tmp_path, "auto")
    assert resolver.resolve("150") == tmp_path / "150.webm"  # flat first
    assert resolver.resolve("299") == tmp_path / "000003" / "299.mp4"
    for bad in ("../299", "..", ""):
        with pytest.raises(VideoError, match="unsafe id"):
            resolver.resolve(bad)
    with pytest.raises(VideoError, match="000004/300.mp4") as error:
        resolver.resolve("300")
    assert error.value.path == str(tmp_path / "000004" / "300.mp4")


def test_scan_finds_nested_videos_and_refuses_one_id_twice(tmp_path):
    for rel in ("000001/7.mp4", "000002/101.MP4", "a/b/c/clip.webm", "notes.txt", ".hidden/9.mp4", "000001/.8.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    resolver = VideoResolver.scan(tmp_path)
    assert resolver.ids() == ["101", "7", "clip"]
    assert resolver.resolve("clip") == tmp_path / "a" / "b" / "c" / "clip.webm"
    with pytest.raises(VideoError, match="no video file of this name"):
        resolver.resolve("9")
    (tmp_path / "7.mkv").write_bytes(b"x")
    with pytest.raises(ValueError, match="'7' is two files"):
        VideoResolver.scan(tmp_path)


def test_stage1_examples_from_the_reference_jsonl_and_our_own(tmp_path):
    reference = tmp_path / "reference.jsonl"
    rows = [
        {"query_id": "q1", "doc_id": 12, "videos": ["/v/12.mp4"], "evidence": {"caption": "", "asr": ""}},
        {"query_id": "q2", "doc_id": "12", "videos": ["/v/12.mp4"], "evidence": {"caption": " A dog. ", "asr": ""}},
        {"query_id": "q1", "doc_id": "13", "videos": ["/v/13.mp4"], "evidence": {"caption": "A cat."}},
        {"query_id": "q3", "doc_id": "13", "videos": ["/v/13.mp4"], "evidence": {"caption": "Another text."}},
        {"query_id": "q1", "doc_id": "14", "videos": ["/v/14.mp4"], "evidence": {"caption": ""}},
    ]
    reference.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = formats.read_stage1_examples(reference)
    assert [(e["doc_id"], e["caption"], e["videos"]) for e in examples] == [
        ("12", "A dog.", ["/v/12.mp4"]), ("13", "A cat.", ["/v/13.mp4"])]
    ours = tmp_path / "stage1.jsonl"
    formats.write_jsonl(ours, [{"doc_id": "5", "videos": ["/v/5.mp4"], "caption": "Red.", "caption_source": "reference"}])
    assert formats.read_stage1_examples(ours) == [
        {"doc_id": "5", "videos": ["/v/5.mp4"], "caption": "Red.", "caption_source": "reference"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"doc_id": "5", "videos": ["/v/5.mp4"]}) + "\n")
    with pytest.raises(formats.FormatError, match=r"bad.jsonl:1: no caption.*evidence.caption"):
        formats.read_stage1_examples(bad)
    bad.write_text(json.dumps({"doc_id": "5", "videos": [], "caption": "x"}) + "\n")
    with pytest.raises(formats.FormatError, match=r"bad.jsonl:1: doc '5': videos must be"):
        formats.read_stage1_examples(bad)


def test_prediction_dir_skips_the_rerank_bookkeeping_files(tmp_path):
    formats.write_video_scores(tmp_path / "7_reranking_m.json", "7",
                               {"q1": {"logprob_yes": -1.0, "logprob_no": -2.0, "logit_delta": 1.0, "p_yes": 0.7}})
    formats.write_json(tmp_path / formats.RERANK_RUN_INFO, {"model": {"model": "m"}})
    formats.write_json(tmp_path / formats.RERANK_SUMMARY, {"videos_asked": 1})
    assert formats.read_prediction_dir(tmp_path) == {"q1": {"7": 1.0}}
    formats.write_json(tmp_path / "other.json", {"x": 1})
    with pytest.raises(formats.FormatError, match="other.json"):  # any other JSON is still checked
        formats.read_prediction_dir(tmp_path)


def test_shared_flags_have_one_name_and_keep_the_reference_spelling():
    """--model and --video-dir mean the same in every CLI; the reference's --model-name / --model-path /
    --video-root still parse to the same settings."""
    from rankvideo.generation import captions, teacher_labels

    parse = captions.build_parser().parse_args
    common = ["--output", "c.jsonl"]
    assert vars(parse(["--model", "M", "--video-dir", "V", *common])) == \
        vars(parse(["--model-name", "M", "--video-root", "V", *common]))
    parse = teacher_labels.build_parser().parse_args
    common = ["--queries", "q.tsv", "--candidates", "c.trec", "--captions-jsonl", "c.jsonl", "--output", "t.jsonl"]
    assert vars(parse(["--model", "M", *common])) == vars(parse(["--model-path", "M", *common]))
    assert parse(["--model", "M", *common]).model_path == "M"
