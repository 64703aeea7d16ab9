"""The synthetic benchmark: deterministic bytes, sound splits and grades, calibrated first stage."""

import hashlib
import itertools

import av
import numpy as np
import pytest

from rankvideo.data import first_stage, formats
from rankvideo.evaluation.evaluate import evaluate_run
from rankvideo.demo.synthetic import ATTRIBUTES, SyntheticConfig, describe, generate, grade, Video

SMALL = {"n_videos": 24, "n_test_queries": 6, "n_train_queries": 20}


def digests(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    generate(SyntheticConfig.from_dict(SMALL), tmp_path / "a")
    generate(SyntheticConfig.from_dict(SMALL), tmp_path / "b")
    generate(SyntheticConfig.from_dict({**SMALL, "seed": 99}), tmp_path / "c")
    a, b, c = digests(tmp_path / "a"), digests(tmp_path / "b"), digests(tmp_path / "c")
    assert len(a) == 24 + 7 + 2 and a == b  # + the (empty) perception set's two JSONL files
    assert a["videos/v0001.mp4"] != c["videos/v0001.mp4"] and a["qrels.txt"] != c["qrels.txt"]


def test_perception_set_adds_captioned_videos_and_changes_no_corpus_byte(tmp_path):
    generate(SyntheticConfig.from_dict(SMALL), tmp_path / "a")
    summary = generate(SyntheticConfig.from_dict({**SMALL, "n_perception_videos": 10}), tmp_path / "b")
    a, b = digests(tmp_path / "a"), digests(tmp_path / "b")
    assert {k: v for k, v in b.items() if not k.startswith("perception/") and k != "summary.json"} == \
        {k: v for k, v in a.items() if not k.startswith("perception/") and k != "summary.json"}
    assert summary["n_perception_videos"] == 10
    captions = formats.read_id_text_jsonl(tmp_path / "b/perception/captions_reference.jsonl")
    assert sorted(captions) == [f"p{i:04d}" for i in range(1, 11)]
    assert sorted(p.name for p in (tmp_path / "b/perception/videos").iterdir()) == [f"{v}.mp4" for v in sorted(captions)]
    qrels = formats.read_qrels(tmp_path / "b/qrels.txt")
    assert not any(doc in captions for judged in qrels.values() for doc in judged), "no perception video is judged"
    attributes = formats.read_jsonl(tmp_path / "b/perception/videos.jsonl")
    assert len({tuple(r[a] for a in ATTRIBUTES) for r in attributes}) > 5, "drawn like the corpus, not one kind"
    assert all(r["colour"] in captions[r["doc_id"]] for r in attributes)


def test_videos_decode_as_h264_with_the_configured_shape(tmp_path):
    cfg = SyntheticConfig.from_dict({**SMALL, "n_videos": 4, "width": 48, "height": 32, "frames": 5})
    generate(cfg, tmp_path)
    with av.open(str(tmp_path / "videos" / "v0001.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 5 and frames[0].shape == (32, 48, 3)
    assert not np.array_equal(frames[0], frames[-1]), "objects must move"


def test_splits_grades_and_texts(tmp_path):
    generate(SyntheticConfig.from_dict(SMALL | {"n_videos": 60, "n_train_queries": 40}), tmp_path)
    attributes = {r["doc_id"]: r for r in formats.read_jsonl(tmp_path / "videos.jsonl")}
    videos = {vid: Video(video_id=vid, **{a: r[a] for a in ATTRIBUTES}) for vid, r in attributes.items()}
    train = formats.read_queries(tmp_path / "queries_train.tsv")
    test = formats.read_queries(tmp_path / "queries_test.tsv")
    qrels = formats.read_qrels(tmp_path / "qrels.txt")
    assert set(qrels) == set(train) | set(test) and not set(train) & set(test)
    assert all(len(judged) == len(videos) for judged in qrels.values()), "every video judged for every query"
    assert all(2 in qrels[q].values() for q in test), "each test query has a fully relevant video"
    # partial-attribute queries are in training ("a red circle", "something moving left")
    assert any(text.startswith("something") or len(text.split()) <= 3 for text in train.values())
    # grades follow the attributes: every test query is described from a subset of one video's
    # attributes; recover that subset from its words and grade every video against it
    for q, text in test.items():
        drawn = {frozenset((a, video.attributes()[a]) for a in subset) for video in videos.values()
                 for size in range(1, len(ATTRIBUTES) + 1) for subset in itertools.combinations(ATTRIBUTES, size)}
        matches = [dict(key) for key in drawn if describe(dict(key)) == text]
        assert len(matches) == 1, (q, text, matches)
        assert {vid: grade(matches[0], video) for vid, video in videos.items()} == qrels[q], q
    # captions name every attribute; transcripts exist for every video
    captions = formats.read_id_text_jsonl(tmp_path / "captions_reference.jsonl")
    for vid, video in videos.items():
        for attr in ("colour", "shape", "background"):
            assert getattr(video, attr) in captions[vid]
    assert set(formats.read_id_text_jsonl(tmp_path / "transcripts.jsonl")) == set(videos)


def test_grade_and_describe():
    video = Video("v", count=2, colour="red", shape="circle", motion="left", background="white")
    assert grade({"colour": "red", "shape": "circle"}, video) == 2
    assert grade({"colour": "red", "shape": "square"}, video) == 1
    assert grade({"colour": "blue", "shape": "square"}, video) == 0
    assert grade({"colour": "blue"}, video) == 0
    assert describe({"count": 2, "colour": "red", "shape": "circle", "motion": "left"}) == "two red circles moving left"
    assert describe({"motion": "left"}) == "something moving left"
    assert describe({"colour": "red", "shape": "circle"}) == "a red circle"
    assert describe({"count": 1, "background": "grey"}) == "a single object on a grey background"


def test_test_combinations_never_in_training(tmp_path):
    from rankvideo.demo.synthetic import draw_videos, make_queries

    cfg = SyntheticConfig.from_dict({})
    videos = draw_videos(cfg, np.random.default_rng(0))
    train, test = make_queries(videos, cfg, np.random.default_rng(1))
    test_keys = [frozenset(a.items()) for a in test.values()]
    for attrs in train.values():
        key = frozenset(attrs.items())
        assert not any(t <= key for t in test_keys)
    assert sum(len(a) <= 2 for a in train.values()) == round(cfg.n_train_queries * cfg.train_partial_fraction)


def test_unknown_setting_is_named():
    with pytest.raises(ValueError, match="n_vidoes"):
        SyntheticConfig.from_dict({"n_vidoes": 3})


def test_default_calibration_bm25_on_transcripts(tmp_path):
    """Documented in the README: BM25 nDCG@10 on test queries within 0.35-0.6, recall@depth >= 0.8."""
    from rankvideo import config

    defaults = config.defaults()
    generate(SyntheticConfig.from_dict(defaults["dataset"]["synthetic"]), tmp_path)
    depth = defaults["first_stage"]["depth"]
    run = first_stage.bm25_run(formats.read_queries(tmp_path / "queries_test.tsv"),
                               formats.read_id_text_jsonl(tmp_path / "transcripts.jsonl"), depth)
    results = evaluate_run(run, formats.read_qrels(tmp_path / "qrels.txt"), ks=(10, depth))
    ndcg = np.mean([r["ndcg_cut_10"] for r in results.values()])
    recall = np.mean([r[f"recall_{depth}"] for r in results.values()])
    assert 0.35 <= ndcg <= 0.6, ndcg
    assert recall >= 0.8, recall
