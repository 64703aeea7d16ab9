"""Unit checks of the research probes (research/*.py): not part of the product's test suite
(`make test` runs tests/ only); run them with `python -m pytest research/tests`."""

import numpy as np
import pytest

from rankvideo.demo.synthetic import SyntheticConfig, Video, describe

def test_caption_probe_reads_every_attribute_back_from_reference_captions():
    import itertools
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from caption_probe import read_attributes
    from rankvideo.demo.synthetic import BACKGROUNDS, COLOURS, COUNTS, MOTIONS, SHAPES, reference_caption

    for count, colour, shape, motion, background in itertools.product(COUNTS, COLOURS, SHAPES, MOTIONS, BACKGROUNDS):
        video = Video("v", count=count, colour=colour, shape=shape, motion=motion, background=background)
        assert read_attributes("<think>" + reference_caption(video) + "</think>") == video.attributes()
    assert read_attributes("a red blue square")["colour"] is None  # two colours named: not read


def test_grounding_probe_groups_name_one_attribute_the_positive_has_and_the_negatives_lack(tmp_path):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from grounding_probe import build_groups
    from rankvideo.demo.synthetic import describe, render_set

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

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
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

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from vision_probe import main
    from rankvideo.demo.tiny_model import build_tiny_vlm
    from rankvideo.demo.synthetic import render_set

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

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from query_likelihood import caption_wording, query_loglik
    from rankvideo import prompts
    from rankvideo.backends.hf import HFBackend
    from rankvideo.demo.tiny_model import build_tiny_vlm
    from rankvideo.demo.synthetic import reference_caption, render_set
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

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
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

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
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
