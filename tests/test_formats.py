"""Readers accept BOM/CRLF, keep ids as strings and name file, line and problem on bad input."""

import json

import pytest

from rankvideo.data import formats
from rankvideo.data.formats import FormatError


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def test_queries_with_bom_and_crlf(tmp_path):
    path = write(tmp_path, "q.tsv", "\ufeff001\ttwo red circles\r\n2\ta cat\r\n\r\n")
    assert formats.read_queries(path) == {"001": "two red circles", "2": "a cat"}


@pytest.mark.parametrize("text, line, problem", [
    ("q1\tok\nq2 no tab\n", 2, "expected 2 tab-separated fields"),
    ("q1\tok\nq1\tagain\n", 2, "appears twice"),
    ("q1\t  \n", 1, "empty text"),
    ("q 1\ttext\n", 1, "contains whitespace"),
    ("q1\ta\tb\n", 1, "found 3"),
])
def test_bad_query_lines(tmp_path, text, line, problem):
    path = write(tmp_path, "q.tsv", text)
    with pytest.raises(FormatError) as err:
        formats.read_queries(path)
    assert err.value.line == line and str(path) in str(err.value) and problem in str(err.value)


def test_not_utf8_is_named(tmp_path):
    path = write(tmp_path, "q.tsv", "q1\tcaf\xe9\n", encoding="latin-1")
    with pytest.raises(FormatError, match="not valid UTF-8"):
        formats.read_queries(path)


def test_missing_file_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        formats.read_queries(tmp_path / "nope.tsv")


def test_qrels_round_trip_and_errors(tmp_path):
    path = write(tmp_path, "qrels", "\ufeff1 0 007 2\r\n1 0 8 0\r\n2 0 x -1\n")
    qrels = formats.read_qrels(path)
    assert qrels == {"1": {"007": 2, "8": 0}, "2": {"x": -1}}
    formats.write_qrels(tmp_path / "out", qrels)
    assert formats.read_qrels(tmp_path / "out") == qrels
    for text, line, problem in [("1 0 d\n", 1, "expected 4 fields"), ("1 0 d 1\n1 0 d 2\n", 2, "judged twice"),
                                ("1 0 d high\n", 1, "not an integer")]:
        bad = write(tmp_path, "bad", text)
        with pytest.raises(FormatError) as err:
            formats.read_qrels(bad)
        assert err.value.line == line and problem in str(err.value)


def test_trec_run_round_trip_order_and_errors(tmp_path):
    run = {"q1": {"a": 1.0, "b": 3.0, "c": 1.0}, "q2": {"z": 0.5}}
    formats.write_trec_run(tmp_path / "run.trec", run, tag="bm25")
    lines = (tmp_path / "run.trec").read_text().splitlines()
    # score descending, ties by id descending (trec_eval's order)
    assert [line.split()[2] for line in lines[:3]] == ["b", "c", "a"]
    assert [line.split()[3] for line in lines[:3]] == ["1", "2", "3"]
    assert formats.read_trec_run(tmp_path / "run.trec") == run
    for text, line, problem in [("q Q0 d 1 0.5\n", 1, "expected 6 fields"), ("q Q0 d 1 x t\n", 1, "not a number"),
                                ("q Q0 d one 1 t\n", 1, "rank"), ("q Q0 d 1 1 t\nq Q0 d 2 1 t\n", 2, "appears twice"),
                                ("q Q0 d 1 nan t\n", 1, "NaN")]:
        bad = write(tmp_path, "bad.trec", text)
        with pytest.raises(FormatError) as err:
            formats.read_trec_run(bad)
        assert err.value.line == line and problem in str(err.value)


def test_first_stage_json(tmp_path):
    path = write(tmp_path, "fs.json", '\ufeff{"1": {"10": 2, "11": 1.5}}')
    assert formats.read_run(path) == {"1": {"10": 2.0, "11": 1.5}}
    with pytest.raises(FormatError, match="not a number"):
        formats.read_first_stage_json(write(tmp_path, "b.json", '{"1": {"10": "high"}}'))
    with pytest.raises(FormatError, match=r"b2.json:2: invalid JSON"):
        formats.read_first_stage_json(write(tmp_path, "b2.json", '{"1":\n {"10": }}'))
    with pytest.raises(FormatError, match="expected an object"):
        formats.read_first_stage_json(write(tmp_path, "b3.json", '{"1": [1, 2]}'))


def test_video2queries(tmp_path):
    run = {"q2": {"v1": 1.0, "v2": 2.0}, "q1": {"v1": 5.0}}
    mapping = formats.video2queries_from_run(run)
    assert mapping == {"v1": ["q1", "q2"], "v2": ["q2"]}
    assert formats.video2queries_from_run(run, depth=1) == {"v1": ["q1"], "v2": ["q2"]}
    formats.write_json(tmp_path / "v2q.json", mapping)
    assert formats.read_video2queries(tmp_path / "v2q.json") == mapping
    with pytest.raises(FormatError, match="listed twice"):
        formats.read_video2queries(write(tmp_path, "bad.json", '{"v1": ["q1", "q1"]}'))
    assert formats.read_video2queries(write(tmp_path, "ints.json", '{"7": [1, 2]}')) == {"7": ["1", "2"]}


def test_jsonl(tmp_path):
    formats.write_jsonl(tmp_path / "a.jsonl", [{"doc_id": "1", "text": "ä"}, {"doc_id": "2", "text": "b"}])
    assert formats.read_id_text_jsonl(tmp_path / "a.jsonl") == {"1": "ä", "2": "b"}
    bad = write(tmp_path, "b.jsonl", '{"doc_id": "1", "text": "a"}\n{"doc_id": "2"}\n')
    with pytest.raises(FormatError) as err:
        formats.read_id_text_jsonl(bad)
    assert err.value.line == 2 and "missing field(s) text" in str(err.value)
    bad = write(tmp_path, "c.jsonl", '{"doc_id": "1", "text": "a"}\r\n{"doc_id": "1", "text": "b"}\r\n')
    with pytest.raises(FormatError, match="c.jsonl:2: doc_id '1' appears twice"):
        formats.read_id_text_jsonl(bad)
    with pytest.raises(FormatError, match="d.jsonl:1: invalid JSON"):
        formats.read_jsonl(write(tmp_path, "d.jsonl", "{oops\n"))
    with pytest.raises(FormatError, match="e.jsonl:1: expected a JSON object"):
        formats.read_jsonl(write(tmp_path, "e.jsonl", "[1]\n"))


def test_video_scores_and_prediction_dir(tmp_path):
    pred = tmp_path / "pred"
    scores = {"q1": {"logprob_yes": -0.1, "logprob_no": -2.0, "logit_delta": 1.9, "p_yes": 0.87}}
    formats.write_video_scores(pred / formats.rerank_filename("v1", "tiny"), "v1", scores)
    assert (pred / "v1_reranking_tiny.json").exists()
    assert formats.read_prediction_dir(pred) == {"q1": {"v1": 1.9}}
    assert formats.read_prediction_dir(pred, "p_yes") == {"q1": {"v1": 0.87}}
    (pred / "dup.json").write_text(json.dumps({"v1": scores}))
    with pytest.raises(FormatError, match="scored in another file"):
        formats.read_prediction_dir(pred)
    (pred / "dup.json").write_text(json.dumps({"v2": {"q1": {"p_yes": 0.5}}}))
    with pytest.raises(FormatError, match="logit_delta missing"):
        formats.read_prediction_dir(pred)


def test_video_index(tmp_path):
    path = write(tmp_path, "index.tsv", "v1\tvideos/a.mp4\r\nv2\t/abs/b.webm\n")
    assert formats.read_video_index(path) == {"v1": "videos/a.mp4", "v2": "/abs/b.webm"}
    with pytest.raises(FormatError, match="index2.tsv:1"):
        formats.read_video_index(write(tmp_path, "index2.tsv", "v1 videos/a.mp4\n"))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")

    def records():
        yield {"a": 1}
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        formats.write_jsonl(target, records())
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_atomic_dir_replaces_the_folder_only_when_whole(tmp_path):
    target = tmp_path / "model"
    (target / "old").mkdir(parents=True)
    (tmp_path / "model.partial").mkdir()  # a killed writer's leftover
    (tmp_path / "model.partial" / "stale").write_text("x")
    with pytest.raises(RuntimeError):
        with formats.atomic_dir(target) as partial:
            assert not (partial / "stale").exists()  # cleared before writing
            (partial / "half").write_text("x")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"] and (target / "old").is_dir()
    with formats.atomic_dir(target) as partial:
        (partial / "new").write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in target.iterdir()] == ["new"]


def test_dir_lock_names_its_holder_while_held_and_is_empty_after(tmp_path):
    from rankvideo.data.formats import DirLock, LockedError

    with DirLock(tmp_path):
        assert (tmp_path / DirLock.NAME).read_text().startswith(f"process {__import__('os').getpid()} on ")
    assert (tmp_path / DirLock.NAME).read_bytes() == b""  # the same file after every run
    with DirLock(tmp_path):  # released: a later writer takes it
        pass
