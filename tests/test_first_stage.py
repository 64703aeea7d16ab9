"""BM25 first stage (bm25s) and imported runs write the same three files."""

import logging

from rankvideo.data import first_stage, formats


def test_bm25_ranks_matching_documents_first_and_breaks_ties_by_id():
    docs = {"a": "red circles moving left", "b": "a blue square", "c": "red square", "d": "nothing here", "e": "nothing here"}
    run = first_stage.bm25_run({"q": "red circle"}, docs, depth=4)
    ranking = formats.ranked(run["q"])
    assert ranking[0] == "a" and ranking[1] == "c"  # stemming: circles ~ circle
    assert len(ranking) == 4 and run["q"]["e"] == run["q"]["d"] == 0.0
    assert ranking[2:] == ["e", "d"]  # zero scores tie: id descending, as trec_eval orders them


def test_import_stage_cuts_depth_and_reports_missing(tmp_path, caplog):
    (tmp_path / "q.tsv").write_text("1\tone\n2\ttwo\n")
    (tmp_path / "fs.json").write_text('{"1": {"10": 3, "11": 2, "12": 1}, "9": {"10": 1}}')
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        run = first_stage.run_import_stage(tmp_path / "fs.json", tmp_path / "q.tsv", 2, out / "t.json", out / "t.trec",
                                           out / "v2q.json")
    assert run == {"1": {"10": 3.0, "11": 2.0}}
    assert formats.read_trec_run(out / "t.trec") == run
    assert formats.read_video2queries(out / "v2q.json") == {"10": ["1"], "11": ["1"]}
    assert "1 of 2 queries have no first-stage candidates" in caplog.text
    assert "1 queries of the run are not in" in caplog.text
