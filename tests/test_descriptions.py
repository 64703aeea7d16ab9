"""Copy pretraining and video descriptions (not in REFERENCE.md; for the tiny models trained from
nothing): the words copy pretraining draws on, a copy-pretrained tiny model, descriptions written by
a model with the stage-1 prompt, stage 2 trained with them and scored with them (CLI, pipeline
function, VLMReranker), and the errors when they are missing."""

import json
import random
import shutil

import pytest

from conftest import small_training_data
from rankvideo import prompts
from rankvideo.data import formats
from rankvideo.demo import copy_pretrain
from rankvideo.generation import captions as generate_captions
from rankvideo.scoring import rerank
from rankvideo.training.common import TrainSettings
from rankvideo.training.losses import LossWeights
from rankvideo.video import VideoResolver, VideoSettings

SETTINGS = VideoSettings.with_tokens(4.0, 8, 4)


def test_a_description_comes_before_the_query_in_the_prompt():
    class Template:  # the chat template's text is the user content in order; enough to see where the line goes
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "|".join(item.get("text", "<video>") for m in messages for item in m["content"])

    plain = prompts.render_rerank(Template(), "a red circle")
    assert plain.endswith("<video>|Query: a red circle\nIs the video relevant? Answer with yes or no.<answer>")
    described = prompts.render_rerank(Template(), "a red circle", description="Two blue squares move up.")
    assert described.endswith("<video>|Video description: Two blue squares move up.\nQuery: a red circle\n"
                              "Is the video relevant? Answer with yes or no.<answer>")
    # query-first variants keep the description right before the query too
    assert prompts.render_rerank(Template(), "q", "query_first", "D.").split("|")[1].startswith("Video description: D.\nQuery: q")


def test_caption_from_output_removes_the_think_tags():
    assert prompts.caption_from_output("<think>A red  circle\nmoves.</think>") == "A red circle moves."
    assert prompts.caption_from_output(prompts.caption_target("Three squares.")) == "Three squares."
    assert prompts.caption_from_output("no tags at all ") == "no tags at all"


def test_copy_vocabulary_comes_from_the_training_data_and_bad_files_are_named(tmp_path):
    captions, queries = tmp_path / "stage1_train.jsonl", tmp_path / "train.jsonl"
    formats.write_jsonl(captions, [{"caption": "A red circle moves upward."}, {"caption": "Two red squares."}])
    formats.write_jsonl(queries, [{"query": "red circles, moving"}])
    words = copy_pretrain.vocabulary([(captions, "caption"), (queries, "query")])
    assert words == sorted({"a", "red", "circle", "moves", "upward", "two", "squares", "circles", "moving"})
    with pytest.raises(formats.FormatError, match=r"train\.jsonl:1: missing field\(s\) nope"):
        copy_pretrain.vocabulary([(captions, "caption"), (queries, "nope")])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no words"):
        copy_pretrain.vocabulary([(empty, "query")])
    text = copy_pretrain.repeated_texts(random.Random(0), words, 1)[0]
    first, second = text.split("\n")
    assert first == second and 5 <= len(first.split()) <= 14 and set(first.split()) <= set(words)


def test_copy_pretraining_learns_the_repeated_half_and_saves_a_loadable_model(tmp_path, tiny_models):
    from rankvideo.backends.hf import HFBackend

    words = ["red", "blue", "green", "circle", "square", "triangle", "moves", "up", "down", "left", "right",
             "white", "grey", "checkered", "background", "one", "two", "three"]
    out = tmp_path / "copied"
    losses = copy_pretrain.copy_pretrain(str(tiny_models.vlm(seed=3)), out, words, steps=60,
                                         batch_size=8, lr=1e-3, seed=0, device="cpu", progress=False)
    assert len(losses) == 60 and sum(losses[-10:]) / 10 < losses[0] - 2  # from ~log(vocab): words become predictable
    record = formats.read_json(out / copy_pretrain.RECORD)
    assert record["steps"] == 60 and record["words"] == words and len(record["loss"]) == 60
    assert not out.with_name("copied.partial").exists()
    HFBackend(str(out), device="cpu")  # loads like any model folder
    # the command line names a malformed source (PATH:FIELD) and a file without the field
    with pytest.raises(SystemExit):
        copy_pretrain.main(["--model", str(out), "--output", str(tmp_path / "cli"), "--words", "no-field"])
    formats.write_jsonl(tmp_path / "q.jsonl", [{"query": "red"}])
    assert copy_pretrain.main(["--model", str(out), "--output", str(tmp_path / "cli"),
                               "--words", f"{tmp_path / 'q.jsonl'}:caption"]) == 2
    assert not (tmp_path / "cli").exists()


@pytest.fixture(scope="module")
def described(tmp_path_factory, tiny_models):
    """A small benchmark, a tiny model, its descriptions of the candidates (stage-1 prompt) and a
    stage-2 model trained with them."""
    from rankvideo.training import stage2 as train_reranker

    root = tmp_path_factory.mktemp("describe")
    data = small_training_data(root, n_train_queries=4, depth=4, eval_fraction=0.25)
    model = str(tiny_models.vlm(seed=4))
    v2q = {"v0001": ["q1", "q2"], "v0002": ["q1"], "v0003": ["q2"]}
    formats.write_json(root / "v2q_test.json", v2q)
    formats.write_queries(root / "queries.tsv", {"q1": "a red circle", "q2": "two squares moving up"})
    ids = generate_captions.candidate_ids([data / "train.jsonl", data / "eval.jsonl"], root / "v2q_test.json")
    train_ids = {r["doc_id"] for split in ("train", "eval") for r in formats.read_jsonl(data / f"{split}.jsonl")}
    assert ids == sorted(train_ids | set(v2q))
    resolver = VideoResolver(root / "bench/videos")
    counts = generate_captions.run(model, ids, resolver, root / "descriptions.jsonl", root / "failures.jsonl",
                                   SETTINGS, max_new_tokens=6, batch_size=4, options={"device": "cpu"},
                                   stage1_prompt=True, progress=False)
    settings = TrainSettings(finetune="full", lr=1e-3, batch_size=2, max_steps=2, fps=4.0, max_frames=8,
                             tokens_per_frame=4, gradient_checkpointing=False, logging_steps=1, save_steps=1000,
                             warmup_ratio=0.0, grad_accum=1)
    train_reranker.train(model, data / "train.jsonl", data / "eval.jsonl", root / "stage2", settings,
                         LossWeights(lambda_distill=0.0), descriptions=root / "descriptions.jsonl")
    return {"root": root, "data": data, "model": model, "ids": ids, "counts": counts, "v2q": v2q,
            "resolver": resolver, "stage2": str(root / "stage2")}


def test_descriptions_are_written_once_per_candidate_without_think_tags(described):
    root = described["root"]
    assert described["counts"]["captioned"] == len(described["ids"]) and described["counts"]["failed"] == 0
    texts = formats.read_id_text_jsonl(root / "descriptions.jsonl")
    assert sorted(texts) == described["ids"]
    assert not any(prompts.THINK_OPEN in t or prompts.THINK_CLOSE in t for t in texts.values())
    # a rerun finishes nothing twice
    again = generate_captions.run(described["model"], described["ids"], described["resolver"],
                                  root / "descriptions.jsonl", root / "failures.jsonl", SETTINGS, max_new_tokens=6,
                                  batch_size=4, options={"device": "cpu"}, stage1_prompt=True, progress=False)
    assert again["already_done"] == len(described["ids"]) and again["captioned"] == 0


def test_stage2_records_its_descriptions_and_a_missing_one_is_named(described, tmp_path):
    from rankvideo.training import stage2 as train_reranker

    record = json.loads((described["root"] / "stage2/rankvideo_training.json").read_text())
    assert record["descriptions"] == prompts.DESCRIPTION_LAYOUT and "descriptions" in record["data"]
    records = formats.read_jsonl(described["data"] / "train.jsonl")
    missing = records[0]["doc_id"]
    partial = tmp_path / "partial.jsonl"
    formats.write_jsonl(partial, [r for r in formats.read_jsonl(described["root"] / "descriptions.jsonl")
                                  if r["doc_id"] != missing])
    with pytest.raises(ValueError, match=rf"partial\.jsonl: no description of 1 video\(s\) of .*train\.jsonl \({missing}\)"):
        train_reranker.attach_descriptions(records, partial, described["data"] / "train.jsonl")


def test_a_model_trained_with_descriptions_is_scored_with_them(described, tmp_path):
    from rankvideo import VLMReranker

    root, v2q = described["root"], described["v2q"]
    queries = formats.read_queries(root / "queries.tsv")
    # without the descriptions: a clear error, nothing scored
    with pytest.raises(rerank.RerankInputError, match="--descriptions"):
        rerank.run(described["stage2"], v2q, queries, described["resolver"], tmp_path / "none", SETTINGS,
                   options={"device": "cpu"}, progress=False)
    assert not (tmp_path / "none").exists()
    # with them: every pair scored; a video without a description is a recorded failure
    partial = tmp_path / "partial.jsonl"
    formats.write_jsonl(partial, [r for r in formats.read_jsonl(root / "descriptions.jsonl") if r["doc_id"] != "v0003"])
    summary = rerank.run(described["stage2"], v2q, queries, described["resolver"], tmp_path / "out", SETTINGS,
                         options={"device": "cpu"}, progress=False, descriptions=partial)
    assert summary.videos_scored == 2 and summary.videos_failed == 1
    failures = formats.read_jsonl(tmp_path / "out/failures.jsonl")
    assert [f["video_id"] for f in failures] == ["v0003"] and "no description" in failures[0]["reason"]
    assert formats.read_json(tmp_path / "out/run_info.json")["descriptions"]["sha256"]
    scores = {vid: formats.read_video_scores(tmp_path / "out" / formats.rerank_filename(vid, "stage2"))[vid]
              for vid in ("v0001", "v0002")}
    # VLMReranker: the same scores with the same description, others with another; none is an error
    texts = formats.read_id_text_jsonl(partial)
    reranker = VLMReranker(described["stage2"], device="cpu", video_settings=SETTINGS)
    path = str(described["resolver"].resolve("v0001"))
    same = reranker.score_batch([queries["q1"]], [path], descriptions=[texts["v0001"]])[0]
    assert same["logit_delta"] == pytest.approx(scores["v0001"]["q1"]["logit_delta"], abs=1e-4)
    other = reranker.score_batch([queries["q1"]], [path], descriptions=["Three green triangles move down."])[0]
    assert other["logit_delta"] != pytest.approx(same["logit_delta"], abs=1e-6)
    with pytest.raises(ValueError, match="description"):
        reranker.score_batch([queries["q1"]], [path])
    # a folder trained by an older version (the description after the query) is refused, not mis-scored
    old = tmp_path / "old-stage2"
    shutil.copytree(described["stage2"], old)
    record = formats.read_json(old / "rankvideo_training.json")
    assert record["descriptions"] == prompts.DESCRIPTION_LAYOUT
    formats.write_json(old / "rankvideo_training.json", {**record, "descriptions": True})
    with pytest.raises(ValueError, match="after the query.*train_stage2"):
        rerank.run(str(old), v2q, queries, described["resolver"], tmp_path / "old", SETTINGS,
                   options={"device": "cpu"}, progress=False, descriptions=partial)
    with pytest.raises(ValueError, match="after the query"):
        VLMReranker(str(old), device="cpu", video_settings=SETTINGS)
