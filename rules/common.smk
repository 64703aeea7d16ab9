# Config validation, paths of the dataset's files and wildcard constraints: the one place that
# knows where each input comes from (generated synthetic benchmark or the user's files).
from pathlib import Path

from rankvideo import config as rv_config

# the Snakefile resolved and validated the config (rankvideo.config.resolve): every key documented,
# typed and defaulted in rankvideo/schemas/config.schema.yaml
MISSING = ", ".join(rv_config.missing_paths(config))
if MISSING:
    raise ValueError(f"dataset.kind=files needs these config keys to name files: {MISSING}")

RESULTS = config["results_dir"].rstrip("/")


def out(path):
    """A path under the run's results folder (results_dir)."""
    return f"{RESULTS}/{path}"


DATASET = config["dataset"]
SYNTHETIC = DATASET["kind"] == "synthetic"
BENCHMARK = out("benchmark")
SYSTEMS = config["systems"]
import re

from rankvideo.evaluation.evaluate import FUSED_SUFFIX
# systems scored by a model (a fused system reuses its model's predictions)
SCORED = list(dict.fromkeys(s.removesuffix(FUSED_SUFFIX) for s in SYSTEMS if s != "first_stage"))
RERANKERS = config["models"]["rerankers"]
KNOWN = ["base", "stage1", "stage2", *RERANKERS]
if "first_stage" not in SYSTEMS:
    raise ValueError("systems must list first_stage: it is the baseline of the metrics table's significance test")
UNKNOWN = [s for s in SCORED if s not in KNOWN]
if UNKNOWN or f"first_stage{FUSED_SUFFIX}" in SYSTEMS:
    raise ValueError(f"systems: unknown system(s) {', '.join(UNKNOWN or [f'first_stage{FUSED_SUFFIX}'])}; a system is "
                     f"first_stage or one of {', '.join(KNOWN)} (models.rerankers names more models), optionally with "
                     f"{FUSED_SUFFIX}")
CLASH = sorted(set(RERANKERS) & {"first_stage", "base", "stage1", "stage2"})
if CLASH:
    raise ValueError(f"models.rerankers: {', '.join(CLASH)} is a name the pipeline already uses; pick another")
# the trained checkpoints the systems need (training runs only for these)
NEEDS_TRAINING = any(s in ("stage1", "stage2") for s in SCORED)
TRAINED = ["stage1", "stage2"] if config["train_stage1"]["enabled"] else ["stage2"]
COPY_PRETRAIN = config["copy_pretrain"]["steps"] > 0
DESCRIBE = config["descriptions"]["enabled"]
if DESCRIBE and not config["descriptions"]["file"] and not config["train_stage1"]["enabled"]:
    raise ValueError("descriptions.enabled without descriptions.file needs train_stage1.enabled: the stage-1 model "
                     "writes the descriptions")
SHARDS = [str(i) for i in range(config["rerank"]["shards"])]
EVAL = config["evaluation"]

wildcard_constraints:
    split="train|test",
    system="|".join(re.escape(s) for s in dict.fromkeys([*SYSTEMS, *SCORED])),
    shard=r"\d+",
    kind="vlm|text",


def queries_tsv(split):
    if SYNTHETIC:
        return f"{BENCHMARK}/queries_{split}.tsv"
    return DATASET["queries"][split]


def qrels_file(split):
    if SYNTHETIC:
        return f"{BENCHMARK}/qrels.txt"
    return DATASET["qrels"][split]


def asr_jsonl():
    if SYNTHETIC:
        return f"{BENCHMARK}/transcripts.jsonl"
    return DATASET["asr"]


def splits():
    """Splits with queries: always test; train where the dataset has training queries."""
    has_train = SYNTHETIC or bool(DATASET["queries"]["train"])
    return ["train", "test"] if has_train else ["test"]


def first_stage_inputs(wildcards):
    inputs = {"queries": queries_tsv(wildcards.split)}
    if config["first_stage"]["method"] == "bm25":
        inputs["documents"] = asr_jsonl()
    else:
        inputs["run"] = config["first_stage"]["files"][wildcards.split]
    return inputs


def system_inputs(wildcards):
    """First-stage run, qrels and test queries; reranked systems add their prediction folder."""
    inputs = {
        "first_stage": out("first_stage/test.json"),
        "qrels": qrels_file("test"),
        "queries": queries_tsv("test"),
    }
    if wildcards.system != "first_stage":
        inputs["predictions"] = f"{RESULTS}/rerank/{wildcards.system.removesuffix(FUSED_SUFFIX)}/predictions"
    return inputs


def fusion_params(wildcards):
    return config["fusion"] if wildcards.system.endswith(FUSED_SUFFIX) else None


TINY = {"base": out("models/tiny-vlm"), "captioner": out("models/tiny-vlm"), "teacher": out("models/tiny-text")}


def model_path(role):
    """Hub id or folder of a model role (base, captioner, teacher); null = the tiny one built here."""
    return config["models"][role] or TINY[role]


def model_input(role):
    """The model folder as an input when the pipeline builds it."""
    path = model_path(role)
    return {"model": path} if path.startswith(out("")) else {}


def model_source(system):
    """Model folder or hub id that a reranked system scores with."""
    if system == "base":
        return model_path("base")
    if system in ("stage1", "stage2"):
        return f"{RESULTS}/models/{system}"
    if system in RERANKERS:
        return RERANKERS[system]
    raise ValueError(f"no model for system {system!r}")


def videos_input():
    return {"videos": f"{BENCHMARK}/videos"} if SYNTHETIC else {}


def train_stage1_inputs(wildcards):
    return {"train": out("training_data/stage1_train.jsonl"), "eval": out("training_data/stage1_eval.jsonl"),
            **model_input("base"), **videos_input()}


def stage1_output():
    """The model stage 1 hands on: its own folder (the paper's curriculum) or, with stage 1 off, the base."""
    return out("models/stage1") if config["train_stage1"]["enabled"] else model_path("base")


def stage2_init(wildcards=None):
    """Stage 2 starts from stage 1's model, copy-pretrained first when copy_pretrain.steps > 0."""
    return out("models/stage1-copy") if COPY_PRETRAIN else stage1_output()


def copy_pretrain_inputs(wildcards):
    inputs = {"stage1_train": out("training_data/stage1_train.jsonl"), "train": out("training_data/train.jsonl")}
    if stage1_output().startswith(out("")):
        inputs["model"] = stage1_output()
    return inputs


DESCRIBED = out("descriptions/descriptions.jsonl")  # the describe rule's output
# what stage 2 trains and scores with: the describe rule's captions, or the texts the config gives
DESCRIPTIONS = config["descriptions"]["file"] or DESCRIBED


def describe_inputs(wildcards):
    return {"model": stage1_output(), "train": out("training_data/train.jsonl"),
            "eval": out("training_data/eval.jsonl"), "video2queries": out("first_stage/video2queries_test.json"),
            **videos_input()}


def train_stage2_inputs(wildcards):
    inputs = {"train": out("training_data/train.jsonl"), "eval": out("training_data/eval.jsonl"), **videos_input()}
    if stage2_init().startswith(out("")):
        inputs["model"] = stage2_init()
    if DESCRIBE:
        inputs["descriptions"] = DESCRIPTIONS
    return inputs


def reference_captions():
    if SYNTHETIC:
        return f"{BENCHMARK}/captions_reference.jsonl"
    if not DATASET["reference_captions"]:
        raise ValueError("training_data.stage1_captions=reference needs dataset.reference_captions")
    return DATASET["reference_captions"]


def captions_inputs(wildcards):
    inputs = {"ids": out("first_stage/video2queries_train.json"), **model_input("captioner")}
    if SYNTHETIC:
        inputs["videos"] = f"{BENCHMARK}/videos"
    return inputs


def teacher_inputs(wildcards):
    return {"queries": queries_tsv("train"), "candidates": out("first_stage/train.trec"),
            "captions": out("captions/captions.jsonl"), "asr": asr_jsonl(), **model_input("teacher")}


def training_data_inputs(wildcards):
    inputs = {"queries": queries_tsv("train"), "qrels": qrels_file("train"), "run": out("first_stage/train.json"),
              "teacher": out("teacher/teacher_labels.jsonl"), "asr": asr_jsonl(),
              "captions": out("captions/captions.jsonl")}
    if config["training_data"]["stage1_captions"] == "reference":
        inputs["stage1_captions"] = reference_captions()
    perception = perception_source()
    if perception:
        inputs["perception_captions"] = perception["captions"]
        if SYNTHETIC:
            inputs["perception_videos"] = perception["dir"]
    return inputs


def perception_source():
    """The stage-1 perception set as {captions, dir, layout, index}, or None."""
    if SYNTHETIC:
        if not DATASET["synthetic"]["n_perception_videos"]:
            return None
        return {"captions": f"{BENCHMARK}/perception/captions_reference.jsonl", "dir": f"{BENCHMARK}/perception/videos",
                "layout": "flat", "index": None}
    perception = DATASET["perception"]
    if bool(perception["captions"]) != bool(perception["videos"]):
        raise ValueError("dataset.perception needs both captions and videos, or neither")
    if not perception["captions"]:
        return None
    return {"captions": perception["captions"], "dir": perception["videos"], "layout": "flat", "index": None}


def rerank_inputs(wildcards):
    inputs = {
        "video2queries": out("first_stage/video2queries_test.json"),
        "queries": queries_tsv("test"),
    }
    model = model_source(wildcards.system)
    if model.startswith(out("")):
        inputs["model"] = model
    if DESCRIBE and wildcards.system == "stage2":  # the system trained with descriptions
        inputs["descriptions"] = DESCRIPTIONS
    if SYNTHETIC:
        inputs["videos"] = f"{BENCHMARK}/videos"
    return inputs


def video_source(wildcards):
    """How the rerank scripts find videos: (folder, layout, index)."""
    if SYNTHETIC:
        return {"dir": f"{BENCHMARK}/videos", "layout": "flat", "index": None}
    return DATASET["videos"]


def gpus(section):
    """GPUs a GPU rule's job asks for by default (slurm/config.yaml's set-resources may change it):
    a training's DDP processes, vLLM's tensor_parallel; 1 otherwise."""
    settings = config[section]
    if section == "copy_pretrain":
        return 1
    if section.startswith("train_stage"):
        return settings["processes"] or 1
    return (settings["tensor_parallel"] or 1) if settings["backend"] == "vllm" else 1
