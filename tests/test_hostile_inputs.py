"""Hostile inputs and faults against the CLIs (issue 23): each case asserts the exact outcome.

Hostile ids in every layout, malformed inputs (repeated JSON keys, bytes that are not UTF-8,
non-finite scores, torn last lines), two writers, changed settings, failures retried, shards in one
folder, symlinks, unwritable or full output folders and missing weights. The CLIs run for real
(their ``main()`` in this process with the tiny Qwen3-VL of :mod:`rankvideo.demo.tiny_model`, or a
subprocess where a second process or a resource limit is the point); nothing is mocked. Where an id
tries to leave the output folder, everything outside it is fingerprinted before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankvideo.data import first_stage, formats
from rankvideo.evaluation import evaluate
from rankvideo.generation import captions as generate_captions, teacher_labels
from rankvideo.scoring import rerank
from rankvideo.data.formats import FormatError
from rankvideo.video import FailureLog, VideoError, VideoResolver
from videos import X264, encode

ENV = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(sys.path))
LONG_ID = "v" * 10_000
GOOD_IDS = ("a", "b")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("hostile")
    model = tiny_models.vlm(seed=1)
    for video_id in GOOD_IDS:
        encode(root / "videos" / f"{video_id}.mp4", codec="libx264", width=64, height=48, n_frames=8, rate=8,
               options=X264)
    formats.write_queries(root / "queries.tsv", {"q1": "a red circle", "q2": "something moving"})
    return {"root": root, "model": model}


def fingerprint(folder: Path, skip: Path) -> dict[str, str]:
    """{relative path: sha256 (or link target)} of everything under ``folder`` except ``skip``."""
    result = {}
    for path in sorted(folder.rglob("*")):
        if path == skip or skip in path.parents:
            continue
        if path.is_symlink():
            result[str(path.relative_to(folder))] = "-> " + os.readlink(path)
        elif path.is_file():
            result[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            result[str(path.relative_to(folder))] = "dir"
    return result


def rerank_args(world, out, v2q, *extra) -> list[str]:
    return ["--model", str(world["model"]), "--video2queries", str(v2q), "--query-mapping",
            str(world["root"] / "queries.tsv"), "--video-dir", str(world["root"] / "videos"), "--output-dir", str(out),
            "--fps", "2", "--max-frames", "4", "--tokens-per-frame", "4", "--no-progress", "--decode-ahead", "0",
            "--dtype", "float32", "--device", "cpu", *extra]


def failures_of(out: Path) -> dict[str, str]:
    return {r["video_id"]: r["reason"] for r in formats.read_jsonl(out / "failures.jsonl")}


def scored(out: Path) -> set[str]:
    return {p.name.split("_reranking_")[0] for p in out.glob("*_reranking_*.json")}


def main_exit(module, argv, capsys) -> tuple[int, str, str]:
    code = module.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------- hostile ids


def test_id_problem_is_the_one_check():
    assert formats.id_problem("a") is None and formats.id_problem("v_0001-x.y") is None
    assert formats.id_problem("é" * 64) is None  # 128 bytes
    cases = {"": "empty", " a": "whitespace", ".": "names a folder", "..": "names a folder", "../x": "'/'",
             "/etc/passwd": "'/'", "a\\b": "'\\\\'", "a\x00b": "control", "a\nb": "control",
             "é" * 65: "130 bytes long", LONG_ID: "10000 bytes long", "\udc80": "surrogate"}
    for video_id, reason in cases.items():
        problem = formats.id_problem(video_id)
        assert problem and problem.startswith("unsafe id") and reason in problem, (video_id[:20], problem)


@given(st.text(max_size=300))
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_an_accepted_id_is_one_short_file_name_inside_the_folder(video_id):
    if formats.id_problem(video_id) is not None:
        return
    name = formats.rerank_filename(video_id, "m" * 100)
    assert len(name.encode()) <= 255 and "/" not in name and "\x00" not in name
    folder = Path("/out")
    assert os.path.normpath(folder / name).startswith("/out/") and Path(os.path.normpath(folder / name)).parent == folder


@pytest.mark.parametrize("layout", ["flat", "multivent", "index"])
def test_resolver_refuses_hostile_ids_in_every_layout(tmp_path, layout):
    (tmp_path / "v.mp4").write_bytes(b"x")
    index = tmp_path / "index.tsv"
    index.write_text(f"../up\t{tmp_path / 'v.mp4'}\n{LONG_ID}\t{tmp_path / 'v.mp4'}\n")
    resolver = VideoResolver(tmp_path / "videos", layout, index if layout == "index" else None)
    for video_id, reason in (("../up", "unsafe id: contains '/'"), (LONG_ID, "unsafe id: 10000 bytes long")):
        with pytest.raises(VideoError) as info:
            resolver.resolve(video_id)
        assert info.value.reason.startswith(reason)


@pytest.mark.parametrize("long_id", [False, True], ids=["escaping", "10000-chars"])
@pytest.mark.parametrize("layout", ["flat", "index"])
def test_rerank_hostile_ids_are_failures_and_touch_nothing_outside(world, tmp_path, capsys, layout, long_id):
    """Before: an id with ../ (or absolute) made rerank delete an unreadable file outside --output-dir;
    with --video-index the score file was written outside; a 10,000-character id aborted the job and
    every resume. After: each is a recorded failure with its reason; nothing outside is touched."""
    work = tmp_path / "work"
    out = work / "sub" / "out"
    victim = work / "sub" / f"victim_reranking_{world['model'].name}.json"
    victim.parent.mkdir(parents=True)
    victim.write_text("not json: rerank used to delete me\n")
    absolute = str(work / "abs")
    Path(absolute + f"_reranking_{world['model'].name}.json").write_text("{broken")
    hostile = {"../victim": "unsafe id: contains '/'", absolute: "unsafe id: contains '/'",
               "..": "unsafe id: '..' names a folder", "a\x00b": "unsafe id: contains a control character"}
    if long_id:
        hostile = {LONG_ID: "unsafe id: 10000 bytes long (at most 128)"}
    v2q = tmp_path / "v2q.json"
    formats.write_json(v2q, {**{vid: ["q1"] for vid in hostile}, "a": ["q1", "q2"]})
    extra = []
    if layout == "index":
        index = tmp_path / "index.tsv"
        good = world["root"] / "videos" / "a.mp4"
        index.write_text("".join(f"{vid}\t{good}\n" for vid in [*hostile, "a"]))
        extra = ["--video-index", str(index)]
    before = fingerprint(tmp_path, out)
    for attempt in range(2):  # the run and a resume: both finish
        code, stdout, _ = main_exit(rerank, rerank_args(world, out, v2q, *extra), capsys)
        assert code == 0 and f"failed {len(hostile)}" in stdout
        assert fingerprint(tmp_path, out) == before  # the victims are there, unchanged; nothing new outside
        assert scored(out) == {"a"}
        assert failures_of(out) == hostile
    assert victim.read_text() == "not json: rerank used to delete me\n"


def test_captions_hostile_ids_are_failures_not_a_crash(world, tmp_path, capsys):
    """Before: a 10,000-character id aborted the whole captions job ("File name too long"), and
    every resume. After: a recorded failure; the other videos are captioned; a resume finishes."""
    ids = tmp_path / "ids.txt"
    ids.write_text(f"a\n{LONG_ID}\n../b\n")
    out = tmp_path / "out" / "captions.jsonl"
    argv = ["--video-root", str(world["root"] / "videos"), "--output", str(out), "--model-name", str(world["model"]),
            "--ids", str(ids), "--fps", "2", "--max-frames", "4", "--tokens-per-frame", "4", "--max-new-tokens", "4",
            "--no-progress", "--dtype", "float32", "--device", "cpu"]
    code, stdout, _ = main_exit(generate_captions, argv, capsys)
    assert code == 0 and "captioned=1" in stdout and "failed=2" in stdout
    assert [r["doc_id"] for r in formats.read_jsonl(out)] == ["a"]
    assert failures_of(out.parent) == {LONG_ID: "unsafe id: 10000 bytes long (at most 128)", "../b": "unsafe id: contains '/'"}
    code, stdout, _ = main_exit(generate_captions, argv, capsys)
    assert code == 0 and "already_done=1" in stdout and "failed=2" in stdout
    assert len(formats.read_jsonl(out.parent / "failures.jsonl")) == 2


# ----------------------------------------------------------------------------- malformed input


DUPLICATES = {
    "video2queries": ('{"v1": ["q1"], "v1": ["q2"]}', formats.read_video2queries),
    "first stage": ('{"q1": {"v1": 1.0}, "q1": {"v2": 2.0}}', formats.read_first_stage_json),
    "first stage inner": ('{"q1": {"v1": 1.0, "v1": 3.0}}', formats.read_run),
    "predictions": ('{"v1": {"q1": {"logit_delta": 1, "p_yes": 0.7}, "q1": {"logit_delta": -1, "p_yes": 0.2}}}',
                    formats.read_video_scores),
    "run_info": ('{"model": "a", "model": "b"}', formats.read_json),
}


@pytest.mark.parametrize("case", sorted(DUPLICATES))
def test_repeated_json_keys_are_errors_naming_file_and_key(tmp_path, case):
    """Before: the last of two equal keys was kept silently (exit 0). After: an error naming both."""
    text, reader = DUPLICATES[case]
    path = tmp_path / "input.json"
    path.write_text(text)
    with pytest.raises(FormatError) as info:
        reader(path)
    assert str(path) in str(info.value) and "appears twice in one object" in str(info.value)
    assert ("'v1'" in str(info.value)) or ("'q1'" in str(info.value)) or ("'model'" in str(info.value))


def test_repeated_keys_in_a_jsonl_line_name_the_line(tmp_path):
    path = tmp_path / "teacher.jsonl"
    path.write_text('{"doc_id": "a", "text": "x"}\n{"doc_id": "b", "text": "y", "text": "z"}\n')
    with pytest.raises(FormatError, match=r"teacher.jsonl:2: key 'text' appears twice"):
        formats.read_id_text_jsonl(path)


def test_repeated_keys_exit_2_in_the_clis(world, tmp_path, capsys):
    v2q = tmp_path / "v2q.json"
    v2q.write_text('{"a": ["q1"], "a": ["q2"]}')
    code, _, err = main_exit(rerank, rerank_args(world, tmp_path / "out", v2q), capsys)
    assert code == 2 and f"{v2q}: key 'a' appears twice in one object" in err
    assert not (tmp_path / "out").exists()
    first = tmp_path / "first.json"
    first.write_text('{"q1": {"a": 2.0, "b": 1.0}, "q1": {"b": 5.0}}')
    (tmp_path / "qrels.txt").write_text("q1 0 a 1\n")
    code, _, err = main_exit(evaluate, ["--first-stage", str(first), "--qrels", str(tmp_path / "qrels.txt")], capsys)
    assert code == 2 and f"{first}: key 'q1' appears twice" in err


NOT_UTF8 = b'{"a": ["q1"], "caf\xe9": ["q2"]}'


def test_bytes_that_are_not_utf8_name_the_file(world, tmp_path, capsys):
    """Before: a traceback (evaluate, generate_reasoning) or an error without the file (rerank)."""
    bad = tmp_path / "latin1.json"
    bad.write_bytes(NOT_UTF8)
    code, _, err = main_exit(rerank, rerank_args(world, tmp_path / "out", bad), capsys)
    assert code == 2 and f"{bad}: not valid UTF-8 (byte 0xe9 at offset 18)" in err
    (tmp_path / "qrels.txt").write_text("q1 0 a 1\n")
    code, _, err = main_exit(evaluate, ["--first-stage", str(bad), "--qrels", str(tmp_path / "qrels.txt")], capsys)
    assert code == 2 and f"{bad}: not valid UTF-8" in err
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"doc_id": "a", "text": "x"}\n')
    code, _, err = main_exit(teacher_labels, ["--queries", str(world["root"] / "queries.tsv"), "--candidates",
                                                  str(bad), "--captions-jsonl", str(captions), "--output",
                                                  str(tmp_path / "t.jsonl"), "--model-path", str(world["model"]),
                                                  "--no-progress"], capsys)
    assert code == 2 and f"{bad}: not valid UTF-8" in err
    tsv = tmp_path / "queries.tsv"
    tsv.write_bytes(b"q1\tok\nq2\tcaf\xe9\n")
    with pytest.raises(FormatError, match=r"queries.tsv:2: not valid UTF-8"):
        formats.read_queries(tsv)
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"a\n\xff\n")
    with pytest.raises(FormatError, match=r"ids.txt:2: not valid UTF-8"):
        generate_captions.read_ids(ids)


@pytest.mark.parametrize("text", ['{"q1": {"a": Infinity}}', '{"q1": {"a": -Infinity}}', '{"q1": {"a": NaN}}',
                                  '{"q1": {"a": 1e999}}'])
def test_non_finite_first_stage_scores_are_refused(tmp_path, text):
    """Before: infinite scores were accepted (and ranked first or last). After: an error naming the pair."""
    path = tmp_path / "first.json"
    path.write_text(text)
    with pytest.raises(FormatError, match=r"first.json: query 'q1', doc 'a': score .* not a number \(or not finite\)"):
        formats.read_run(path)


def test_non_finite_trec_and_prediction_scores_are_refused(tmp_path):
    trec = tmp_path / "run.trec"
    trec.write_text("q1 Q0 a 1 2.0 t\nq1 Q0 b 2 -inf t\n")
    with pytest.raises(FormatError, match=r"run.trec:2: score '-inf' is infinite"):
        formats.read_trec_run(trec)
    pred = tmp_path / "preds" / "a_reranking_m.json"
    pred.parent.mkdir()
    pred.write_text('{"a": {"q1": {"logit_delta": Infinity, "p_yes": 1.0}}}')
    with pytest.raises(FormatError, match=r"a_reranking_m.json: video 'a', query 'q1': logit_delta .* not finite"):
        formats.read_prediction_dir(pred.parent)


# ----------------------------------------------------------------------------- append-only files


RECORDS = [{"video_id": "ü1", "path": "/v/ü1.mp4", "reason": "empty file"},
           {"video_id": "日本", "path": None, "reason": "truncated: 🎞 cut"}]


def test_torn_inside_a_multibyte_character(tmp_path):
    """Before: a failures.jsonl whose last line was torn inside a multi-byte character crashed every
    resume (UnicodeDecodeError). After: the torn line is dropped and the file repaired."""
    path = tmp_path / "failures.jsonl"
    whole = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS).encode()
    cut = whole.index("🎞".encode()) + 2  # inside the 4-byte character
    path.write_bytes(whole[:cut])
    log = FailureLog(path)
    assert log.records() == RECORDS[:1]
    assert path.read_bytes() == whole[: whole.index(b"\n") + 1]


@given(st.lists(st.fixed_dictionaries({"video_id": st.text(min_size=1, max_size=8), "reason": st.text(max_size=12)}),
                max_size=5, unique_by=lambda r: r["video_id"]), st.data())
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_any_torn_tail_keeps_every_whole_record(tmp_path_factory, records, data):
    """However the last line was torn (any byte), the records before it survive and the file is
    rewritten to exactly them; appending then works."""
    path = tmp_path_factory.mktemp("torn") / "log.jsonl"
    lines = [(json.dumps(r, ensure_ascii=False) + "\n").encode() for r in records]
    whole = b"".join(lines)
    cut = data.draw(st.integers(0, len(whole)))
    path.write_bytes(whole[:cut])
    kept = []
    size = 0
    for record, line in zip(records, lines):
        size += len(line)
        if size <= cut or (size - 1 == cut):  # whole line (a record without its newline is whole too)
            kept.append(record)
    appender = formats.JsonlAppender(path, "video_id")
    assert list(appender.records.values()) == kept
    assert formats.read_jsonl(path) == kept
    assert appender.append({"video_id": "\x00new", "reason": ""})
    assert formats.read_jsonl(path)[-1] == {"video_id": "\x00new", "reason": ""}


def test_a_torn_failures_file_resumes_in_the_cli(world, tmp_path, capsys):
    out = tmp_path / "out"
    v2q = tmp_path / "v2q.json"
    formats.write_json(v2q, {"a": ["q1"], "missing": ["q1"]})
    assert main_exit(rerank, rerank_args(world, out, v2q), capsys)[0] == 0
    with open(out / "failures.jsonl", "ab") as handle:
        handle.write('{"video_id": "日'.encode()[:-1])
    code, stdout, _ = main_exit(rerank, rerank_args(world, out, v2q), capsys)
    assert code == 0 and "from an earlier run" in stdout
    assert list(failures_of(out)) == ["missing"]


def test_a_symlinked_failures_file_is_not_written_through(world, tmp_path, capsys):
    """Before: records were appended to the symlink's target, outside the folder. After: exit 2."""
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "elsewhere.jsonl"
    precious = '{"video_id": "kept", "path": null, "reason": "kept by another job"}\n'
    target.write_text(precious)
    (out / "failures.jsonl").symlink_to(target)
    v2q = tmp_path / "v2q.json"
    formats.write_json(v2q, {"missing": ["q1"]})
    code, _, err = main_exit(rerank, rerank_args(world, out, v2q), capsys)
    assert code == 2 and "failures.jsonl: is a symbolic link; refusing to write through it" in err
    assert target.read_text() == precious


# ----------------------------------------------------------------------------- writers, settings, retries


def hold_lock(folder: Path, lock_file: Path | None = None) -> subprocess.Popen:
    """Another process holding the lock of ``folder`` until killed."""
    code = ("import sys, time; from rankvideo.data import formats; "
            f"lock = formats.DirLock({str(folder)!r}, {None if lock_file is None else str(lock_file)!r}).__enter__(); "
            "print('locked', flush=True); time.sleep(600)")
    process = subprocess.Popen([sys.executable, "-c", code], env=ENV, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_writer_is_refused(world, tmp_path, capsys):
    """Before: two rerank processes on one folder duplicated failures.jsonl records, after which
    every run crashed. After: the second exits 2 naming the holder; nothing is written."""
    out = tmp_path / "out"
    v2q = tmp_path / "v2q.json"
    formats.write_json(v2q, {"a": ["q1"], "missing": ["q1"]})
    holder = hold_lock(out)
    try:
        code, _, err = main_exit(rerank, rerank_args(world, out, v2q), capsys)
        assert code == 2 and f"{out} is in use by process {holder.pid} on " in err
        assert sorted(p.name for p in out.iterdir()) == [".rankvideo.lock"]
        captions = tmp_path / "c" / "captions.jsonl"
        other = hold_lock(captions.parent, captions.with_name(".captions.jsonl.lock"))
        try:
            code, _, err = main_exit(generate_captions, ["--video-root", str(world["root"] / "videos"), "--output",
                                                         str(captions), "--model-name", str(world["model"]),
                                                         "--no-progress", "--device", "cpu"], capsys)
            assert code == 2 and f"is in use by process {other.pid}" in err and not captions.exists()
        finally:
            other.kill()
            other.wait()
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed (-9): its lock went with it
    code, _, _ = main_exit(rerank, rerank_args(world, out, v2q), capsys)
    assert code == 0 and scored(out) == {"a"}


def test_other_scoring_settings_are_refused_naming_the_difference(world, tmp_path, capsys):
    """Before: a rerun with another --dtype (device, query batch size) mixed scores of both settings
    in one folder; run_info.json did not record them. After: recorded; a resume with others exits 2."""
    out = tmp_path / "out"
    v2q = tmp_path / "v2q.json"
    formats.write_json(v2q, {"a": ["q1"], "b": ["q1"]})
    assert main_exit(rerank, rerank_args(world, out, v2q, "--id-end", "1"), capsys)[0] == 0
    info = formats.read_json(out / "run_info.json")
    assert info["scoring"] == {"device": "cpu", "dtype": "float32", "query_batch_size": 64}
    code, _, err = main_exit(rerank, rerank_args(world, out, v2q, "--dtype", "bfloat16"), capsys)
    assert code == 2 and "scoring.dtype: 'float32' -> 'bfloat16'" in err
    code, _, err = main_exit(rerank, rerank_args(world, out, v2q, "--query-batch-size", "1"), capsys)
    assert code == 2 and "scoring.query_batch_size: 64 -> 1" in err
    assert scored(out) == {"a"}  # nothing scored with the other settings
    code, _, _ = main_exit(rerank, rerank_args(world, out, v2q, "--dtype", "bfloat16", "--restart", "--id-start", "1"),
                           capsys)
    assert code == 0 and scored(out) == {"b"}  # a's float32 scores were cleared
    assert formats.read_json(out / "run_info.json")["scoring"]["dtype"] == "bfloat16"
    summary = formats.read_json(out / "summary.json")  # the cleared run's counts went with its scores
    assert (summary["videos_asked"], summary["videos_scored"], len(summary["shards"])) == (1, 1, 1)


def test_failures_are_retried_and_replaced(world, tmp_path, capsys):
    """Before: generate_captions never retried a failed video (counted "already done"); rerank scored
    it later but kept the stale failure record. After: both retry it and the record goes."""
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "a.mp4").write_bytes((world["root"] / "videos" / "a.mp4").read_bytes())
    (videos / "b.mp4").write_bytes(b"")  # empty for now
    ids = tmp_path / "ids.txt"
    ids.write_text("a\nb\n")
    captions = tmp_path / "cap" / "captions.jsonl"
    argv = ["--video-root", str(videos), "--output", str(captions), "--model-name", str(world["model"]), "--ids",
            str(ids), "--fps", "2", "--max-frames", "4", "--tokens-per-frame", "4", "--max-new-tokens", "4",
            "--no-progress", "--dtype", "float32", "--device", "cpu"]
    v2q = tmp_path / "v2q.json"
    formats.write_json(v2q, {"a": ["q1"], "b": ["q1"]})
    out = tmp_path / "out"
    rerank_argv = rerank_args(world, out, v2q)
    rerank_argv[rerank_argv.index("--video-dir") + 1] = str(videos)

    code, stdout, _ = main_exit(generate_captions, argv, capsys)
    assert code == 0 and "captioned=1" in stdout and failures_of(captions.parent) == {"b": "empty file"}
    assert main_exit(rerank, rerank_argv, capsys)[0] == 0 and failures_of(out) == {"b": "empty file"}
    # a different failure replaces the record
    (videos / "b.mp4").write_text("not a video\n" * 20)
    main_exit(generate_captions, argv, capsys)
    main_exit(rerank, rerank_argv, capsys)
    for folder in (captions.parent, out):
        assert list(failures_of(folder)) == ["b"] and failures_of(folder)["b"].startswith("not a video")
    # the file is repaired: retried, scored, the failure record gone
    (videos / "b.mp4").write_bytes((world["root"] / "videos" / "b.mp4").read_bytes())
    code, stdout, _ = main_exit(generate_captions, argv, capsys)
    assert code == 0 and "already_done=1" in stdout and "captioned=1" in stdout and "failed=0" in stdout
    assert [r["doc_id"] for r in formats.read_jsonl(captions)] == ["a", "b"]
    code, stdout, _ = main_exit(rerank, rerank_argv, capsys)
    assert code == 0 and scored(out) == {"a", "b"}
    assert failures_of(captions.parent) == {} and failures_of(out) == {}


def test_summaries_of_shards_in_one_folder_merge(world, tmp_path, capsys):
    """Before: with disjoint --id-start/--id-end shards in one folder, summary.json kept only the
    last shard's counts. After: the counts of all shards, each shard's own entry kept."""
    out = tmp_path / "out"
    v2q = tmp_path / "v2q.json"
    formats.write_json(v2q, {"a": ["q1", "q2"], "b": ["q1"], "c": ["q1"]})  # c has no file
    assert main_exit(rerank, rerank_args(world, out, v2q, "--id-start", "0", "--id-end", "1"), capsys)[0] == 0
    assert main_exit(rerank, rerank_args(world, out, v2q, "--id-start", "1", "--id-end", "3"), capsys)[0] == 0
    summary = formats.read_json(out / "summary.json")
    assert (summary["videos_asked"], summary["videos_scored"], summary["videos_failed"]) == (3, 2, 1)
    assert (summary["pairs_asked"], summary["pairs_scored"]) == (4, 3)
    assert [(s["first_id"], s["last_id"]) for s in summary["shards"]] == [("a", "a"), ("b", "c")]
    # a rerun of one shard replaces its own entry only
    assert main_exit(rerank, rerank_args(world, out, v2q, "--id-start", "1", "--id-end", "3"), capsys)[0] == 0
    summary = formats.read_json(out / "summary.json")
    assert (summary["videos_asked"], summary["videos_scored"], summary["videos_already_done"]) == (3, 1, 1)
    assert len(summary["shards"]) == 2
    # a full run covers both shards: one entry
    assert main_exit(rerank, rerank_args(world, out, v2q), capsys)[0] == 0
    summary = formats.read_json(out / "summary.json")
    assert len(summary["shards"]) == 1 and summary["videos_already_done"] == 2 and summary["videos_asked"] == 3


# ----------------------------------------------------------------------------- I/O errors


def error_line(stderr: str) -> str:
    """The one ``error: ...`` sentence of a CLI's stderr (beside its log lines)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def unwritable(tmp_path) -> Path:
    """A folder that cannot be created or written, root or not (sysfs refuses new entries)."""
    if os.geteuid() != 0:
        folder = tmp_path / "readonly"
        folder.mkdir()
        folder.chmod(0o555)
        return folder / "out"
    return Path("/sys/rankvideo-hostile-test/out")


def test_unwritable_output_folder_exits_2_with_one_sentence(world, tmp_path, capsys):
    """Before: a traceback (exit 1). After: exit 2 naming the folder."""
    out = unwritable(tmp_path)
    v2q = tmp_path / "v2q.json"
    formats.write_json(v2q, {"a": ["q1"]})
    code, _, err = main_exit(rerank, rerank_args(world, out, v2q), capsys)
    assert code == 2 and str(out.parent) in error_line(err)
    code, _, err = main_exit(generate_captions, ["--video-root", str(world["root"] / "videos"), "--output",
                                                 str(out / "c.jsonl"), "--model-name", str(world["model"]),
                                                 "--no-progress", "--device", "cpu"], capsys)
    assert code == 2 and str(out.parent) in error_line(err)
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"doc_id": "a", "text": "a red circle"}\n')
    first_stage_argv = ["--queries", str(world["root"] / "queries.tsv"), "--documents", str(docs), "--output-json",
                        str(out / "run.json"), "--output-trec", str(out / "run.trec"), "--output-video2queries",
                        str(out / "v2q.json")]
    code, _, err = main_exit(first_stage, first_stage_argv, capsys)
    assert code == 2 and str(out.parent) in error_line(err)
    docs.write_bytes(b'{"doc_id": "a", "text": "caf\xe9"}\n')
    code, _, err = main_exit(first_stage, first_stage_argv, capsys)
    assert code == 2 and f"{docs}:1: not valid UTF-8" in error_line(err)


def test_full_disk_exits_2_with_one_sentence(world, tmp_path):
    """A file-size limit makes every write past 200 bytes fail as a full disk does (EFBIG instead of
    ENOSPC; Python ignores SIGXFSZ): exit 2, one sentence naming the file, no traceback."""
    v2q = tmp_path / "v2q.json"
    formats.write_json(v2q, {"a": ["q1"]})

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    result = subprocess.run([sys.executable, "-m", "rankvideo.rerank", *rerank_args(world, tmp_path / "out", v2q)],
                            env=ENV, capture_output=True, text=True, timeout=600, preexec_fn=limit)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"error: {tmp_path / 'out'}" in result.stderr and "File too large" in result.stderr


def test_a_model_folder_without_safetensors_exits_2(world, tmp_path, capsys):
    """Before: a traceback from transformers (exit 1). After: exit 2 saying what is missing."""
    broken = tmp_path / "no-weights"
    broken.mkdir()
    for name in os.listdir(world["model"]):
        if not name.endswith(".safetensors") and (world["model"] / name).is_file():
            (broken / name).write_bytes((world["model"] / name).read_bytes())
    v2q = tmp_path / "v2q.json"
    formats.write_json(v2q, {"a": ["q1"]})
    sentence = f"model folder {broken} has no *.safetensors weights"
    code, _, err = main_exit(rerank, rerank_args(world, tmp_path / "out", v2q, "--model", str(broken)), capsys)
    assert code == 2 and sentence in err
    code, _, err = main_exit(generate_captions, ["--video-root", str(world["root"] / "videos"), "--output",
                                                 str(tmp_path / "c.jsonl"), "--model-name", str(broken),
                                                 "--no-progress", "--device", "cpu"], capsys)
    assert code == 2 and sentence in err
    first = tmp_path / "first.json"
    formats.write_json(first, {"q1": {"a": 1.0}})
    captions = tmp_path / "captions.jsonl"
    captions.write_text('{"doc_id": "a", "text": "x"}\n')
    code, _, err = main_exit(teacher_labels, ["--queries", str(world["root"] / "queries.tsv"), "--candidates",
                                                  str(first), "--captions-jsonl", str(captions), "--output",
                                                  str(tmp_path / "t.jsonl"), "--model-path", str(broken),
                                                  "--no-progress", "--device", "cpu"], capsys)
    assert code == 2 and sentence in err


@pytest.mark.parametrize("module", ["train_perception", "train_reranker"])
def test_training_clis_end_bad_input_with_status_2(tmp_path, capsys, module):
    """Missing, empty or malformed training data: one line naming the file, exit status 2, no traceback."""
    import importlib

    main = importlib.import_module(f"rankvideo.{module}").main
    common = ["--model", str(tmp_path / "no-model"), "--output-dir", str(tmp_path / "out")]
    empty, broken = tmp_path / "empty.jsonl", tmp_path / "broken.jsonl"
    empty.write_text("")
    broken.write_text('{"query_id": "q1"\n')
    for data, expected in ((tmp_path / "missing.jsonl", "missing.jsonl"), (empty, "no training examples"),
                           (broken, "broken.jsonl:1")):
        assert main(["--train-data", str(data), *common]) == 2
        err = capsys.readouterr().err
        # one error line (a library imported for the first time may log a warning of its own before it)
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and expected in errors[0] and "Traceback" not in err, err
