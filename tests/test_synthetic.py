"""The synthetic benchmark: deterministic bytes, sound splits and grades, calibrated first stage."""

import hashlib

import av
import numpy as np
import pytest

from rankvideo import first_stage, formats
from rankvideo.evaluate import evaluate_run
from rankvideo.synthetic import ATTRIBUTES, SyntheticConfig, describe, generate, grade, Video

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
    # grades follow the attributes: spot-check by re-deriving the query's attributes from its words
    q = next(iter(test))
    words = test[q].split()
    for vid, rel in qrels[q].items():
        hits = sum(str(v) in words or (a == "count" and v == 1 and "single" in words)
                   for a, v in attributes[vid].items() if a in ATTRIBUTES)
        assert rel == 2 or rel < 2 and hits < 5
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
    from rankvideo.synthetic import draw_videos, make_queries

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


def test_caption_probe_reads_every_attribute_back_from_reference_captions():
    import itertools
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    from caption_probe import read_attributes
    from rankvideo.synthetic import BACKGROUNDS, COLOURS, COUNTS, MOTIONS, SHAPES, reference_caption

    for count, colour, shape, motion, background in itertools.product(COUNTS, COLOURS, SHAPES, MOTIONS, BACKGROUNDS):
        video = Video("v", count=count, colour=colour, shape=shape, motion=motion, background=background)
        assert read_attributes("<think>" + reference_caption(video) + "</think>") == video.attributes()
    assert read_attributes("a red blue square")["colour"] is None  # two colours named: not read


def test_grounding_probe_groups_name_one_attribute_the_positive_has_and_the_negatives_lack(tmp_path):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    from grounding_probe import build_groups
    from rankvideo.synthetic import describe, render_set

    cfg = SyntheticConfig.from_dict({"n_videos": 4})
    videos = [v.attributes() | {"doc_id": v.video_id}
              for v in render_set(cfg, np.random.SeedSequence(3), 30, tmp_path / "probe", prefix="g")]
    assert sorted(p.name for p in (tmp_path / "probe" / "videos").iterdir())[:2] == ["g0001.mp4", "g0002.mp4"]
    records = build_groups(videos, ["colour", "count"], 20, 3, seed=0, video_path=lambda d: f"{d}.mp4")
    assert records == build_groups(videos, ["colour", "count"], 20, 3, seed=0, video_path=lambda d: f"{d}.mp4")
    by_id = {v["doc_id"]: v for v in videos}
    groups: dict = {}
    for r in records:
        groups.setdefault(r["query_id"], []).append(r)
    assert len(groups) == 20
    for group in groups.values():
        assert [r["positive"] for r in group] == [True, False, False, False]
        (positive,), negatives = group[:1], group[1:]
        attr = next(a for a in ("colour", "count") if describe({a: by_id[positive["doc_id"]][a]}) == positive["query"])
        value = by_id[positive["doc_id"]][attr]
        assert all(by_id[n["doc_id"]][attr] != value for n in negatives)
        assert len({r["query"] for r in group}) == 1 and positive["videos"] == [f"{positive['doc_id']}.mp4"]


def test_grounding_probe_renders_its_video_set_once_into_place(tmp_path):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    from grounding_probe import probe_set

    folder = probe_set({"n_videos": 4}, seed=5, n=3, out=tmp_path)
    assert folder == tmp_path / "videos-seed5-n3"
    assert sorted(p.name for p in (folder / "videos").iterdir()) == ["g0001.mp4", "g0002.mp4", "g0003.mp4"]
    stamp = (folder / "videos.jsonl").stat().st_mtime_ns
    assert probe_set({"n_videos": 4}, seed=5, n=3, out=tmp_path) == folder  # reused, not rendered again
    assert (folder / "videos.jsonl").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos-seed5-n3"]  # no staging folder left
    (tmp_path / "videos-seed6-n2" / "videos").mkdir(parents=True)  # an interrupted render of another set
    with pytest.raises(SystemExit, match="videos-seed6-n2 exists without videos.jsonl"):
        probe_set({"n_videos": 4}, seed=6, n=2, out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["videos-seed5-n3", "videos-seed6-n2"]


def test_vision_probe_trains_the_tower_on_an_attribute_and_reports_held_out_accuracy(tmp_path):
    import json
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    from vision_probe import main
    from rankvideo.make_tiny_model import build_tiny_vlm
    from rankvideo.synthetic import render_set

    model = build_tiny_vlm(tmp_path / "vlm", seed=2)
    render_set(SyntheticConfig.from_dict({"n_videos": 4}), np.random.SeedSequence(5), 48, tmp_path / "set", prefix="g")
    out = tmp_path / "colour.json"
    assert main(["--model", str(model), "--videos", str(tmp_path / "set"), "--attribute", "colour", "--steps", "60",
                 "--train", "40", "--held-out", "8", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["values"] == ["blue", "green", "red", "yellow"] and result["chance"] == 0.25
    assert [row["step"] for row in result["curve"]] == [60]
    assert result["curve"][-1]["held_out_accuracy"] >= 0.75  # colour is what the tower learns at once
    with pytest.raises(SystemExit):  # more videos asked for than the set holds
        main(["--model", str(model), "--videos", str(tmp_path / "set"), "--train", "45", "--held-out", "8"])


def test_query_likelihood_words_queries_as_captions_and_batches_like_single_pairs(tmp_path):
    import sys

    import torch

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    from query_likelihood import caption_wording, query_loglik
    from rankvideo import prompts
    from rankvideo.backends.hf import HFBackend
    from rankvideo.make_tiny_model import build_tiny_vlm
    from rankvideo.synthetic import reference_caption, render_set
    from rankvideo.video import VideoSettings, load_video

    video = Video("v", count=2, colour="red", shape="circle", motion="left", background="black")
    asked = caption_wording(describe(video.attributes()))
    assert asked == "Two red circles move from right to left across a black background"
    assert reference_caption(video).startswith(asked)
    one = Video("v", count=1, colour="red", shape="circle", motion="up", background="grey")
    assert reference_caption(one).startswith(caption_wording(describe(one.attributes())))

    backend = HFBackend(str(build_tiny_vlm(tmp_path / "vlm", seed=3)), device="cpu")
    render_set(SyntheticConfig.from_dict({"n_videos": 4}), np.random.SeedSequence(2), 1, tmp_path / "set", prefix="q")
    clip = load_video(tmp_path / "set/videos/q0001.mp4", VideoSettings.with_tokens(4.0, 8, 4))
    queries = ["a red circle", "two blue squares moving up on a white background"]  # different lengths: padding
    batched = query_loglik(backend, clip, queries)
    processor, model = backend.processor, backend.model
    prefix = processor.apply_chat_template(prompts.caption_messages(), tokenize=False,
                                           add_generation_prompt=True) + prompts.THINK_OPEN
    kwargs = dict(videos=[clip.frames], video_metadata=[clip.metadata], do_sample_frames=False, do_resize=False)
    start = len(processor(text=[prefix], **kwargs)["input_ids"][0])
    for query, value in zip(queries, batched):
        inputs = processor(text=[prefix + query], return_tensors="pt", **kwargs)
        with torch.no_grad():
            logprobs = model(**inputs).logits[0].float().log_softmax(-1)
        ids = inputs["input_ids"][0]
        expected = sum(float(logprobs[t - 1, ids[t]]) for t in range(start, len(ids)))
        assert value == pytest.approx(expected, abs=1e-4)
    assert batched[0] > batched[1]  # a shorter query has fewer (negative) log-probabilities to add


def test_attribute_errors_puts_a_missed_attribute_below_exact_matches_only_where_the_scores_check_it():
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    from attribute_errors import attribute_errors

    query = {"count": 2, "colour": "red", "shape": "circle", "background": "black"}
    exact = {"count": 2, "colour": "red", "shape": "circle", "motion": "up", "background": "black"}
    videos = {"exact": exact, "no-colour": exact | {"colour": "blue"}, "no-count": exact | {"count": 3},
              "two-off": exact | {"count": 1, "colour": "green"}}
    checks = ("count", "shape", "background")  # a scorer blind to colour: counts matches of the others
    run = {"q": {doc: float(sum(attrs[a] == query[a] for a in checks)) for doc, attrs in videos.items()}}
    table = attribute_errors(run, {"q": query}, videos)
    assert set(table) == {"exact", "colour", "count"}  # two-off misses two attributes: in neither row
    assert table["colour"] == table["exact"] and table["count"][0] < table["exact"][0]
    assert table["exact"][1] == 1


def test_swap_probe_changes_one_attribute_and_keeps_test_combinations_out():
    import random
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "benchmarks"))
    from swap_probe import add_swaps, attributes, swap

    for attrs in ({"colour": "red"}, {"count": 2, "shape": "square", "motion": "left"},
                  {"count": 1, "colour": "blue", "shape": "diamond", "motion": "up", "background": "grey"}):
        text = describe(attrs)
        assert attributes(text) == attrs
        for which in range(len(attrs)):
            swapped = swap(text, random.Random(which), which)
            if swapped is None:  # count is not swapped
                continue
            changed = {a for a, v in attributes(swapped).items() if attrs[a] != v}
            assert len(changed) == 1 and set(attributes(swapped)) == set(attrs), swapped
    positive = {"query_id": "q", "query": describe({"colour": "red", "shape": "circle"}), "positive": True}
    rows, added = add_swaps([positive, {**positive, "positive": False}], -1, [], seed=0)
    assert added == 2 and all(r["positive"] is False and r["swap"] for r in rows[2:])
    test_query = describe({"colour": "blue", "shape": "circle"})
    rows, added = add_swaps([positive], 3, [test_query], seed=0)  # "a blue circle" would be the test query
    assert added == 3 and test_query not in {r["query"] for r in rows}
