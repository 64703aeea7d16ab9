"""The effective configuration: what a config file resolves to, key by key, against the
reference method (REFERENCE.md); the embedded demo never bleeds into a given config; the Snakefile
and `python -m rankvideo.config show` resolve the same way."""

import subprocess
import sys

import pytest
import yaml

from rankvideo import config as rv_config
from rankvideo import models
from rankvideo.video import VideoSettings

from conftest import REPO, snakemake
from reference import differences

def show(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rankvideo.config", "show", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=120)


@pytest.mark.parametrize("configfile", ["config/multivent.yaml", "config/example.yaml"])
def test_paper_and_own_data_configs_resolve_to_the_reference_method(configfile):
    effective = rv_config.resolve([REPO / configfile])
    assert differences(effective) == {}
    # and the printed form is the same configuration
    printed = yaml.safe_load(show("--configfile", configfile).stdout)
    assert printed == effective


def test_schema_defaults_are_the_reference_method(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert differences(rv_config.resolve([tmp_path / "empty.yaml"])) == {}


def test_the_embedded_demo_applies_only_without_a_configfile(tmp_path):
    demo = rv_config.resolve([], default=REPO / "config/config.yaml")
    # the demo's tiny-model knobs
    assert demo["train_stage2"]["candidates"] == 2 and demo["train_stage2"]["max_steps"] == 2000
    assert demo["training_data"]["positive_grade"] == 2 and demo["train_stage2"]["freeze_vision"]
    assert demo["rerank"]["video"] == {"fps": 4.0, "max_frames": 8, "tokens_per_frame": 4}
    (tmp_path / "mine.yaml").write_text("models: {base: my/model}\n")
    mine = rv_config.resolve([tmp_path / "mine.yaml"], default=REPO / "config/config.yaml")
    assert differences(mine) == {} and mine["models"]["base"] == "my/model"
    assert mine["rerank"]["video"] == {"fps": 2.0, "max_frames": 32, "tokens_per_frame": 128}
    # --config overrides come last, dotted keys on the command line of `show`
    printed = yaml.safe_load(show("train_stage2", "--configfile", str(tmp_path / "mine.yaml"),
                                  "--config", "train_stage2.lr=3e-4").stdout)
    assert printed["train_stage2"]["lr"] == 3e-4 and printed["train_stage2"]["grad_accum"] == 8


def test_show_names_bad_keys_and_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("train_stage2: {batch_size: 3}\n")
    result = show("--configfile", str(tmp_path / "bad.yaml"))
    assert result.returncode == 2
    assert "unknown config key(s) batch_size under train_stage2" in result.stderr
    assert str(tmp_path / "bad.yaml") in result.stderr
    result = show("train_stage3", "--configfile", "config/example.yaml")
    assert result.returncode == 2 and "no config key train_stage3" in result.stderr


@pytest.mark.parametrize("configfiles", [[], ["config/multivent.yaml"], ["config/example.yaml", "over.yaml"]])
def test_snakefile_resolves_exactly_as_show(repo_copy, configfiles):
    """The run's own record of its configuration equals what `show` prints for the same files."""
    (repo_copy / "over.yaml").write_text("rerank: {shards: 3}\nresults_dir: elsewhere\n")
    args = ["--configfile", *configfiles] if configfiles else []
    target = "elsewhere" if "over.yaml" in configfiles else "results"
    snakemake(repo_copy, f"{target}/effective_config.yaml", "--cores", "1", *args)
    recorded = yaml.safe_load((repo_copy / target / "effective_config.yaml").read_text())
    printed = subprocess.run([sys.executable, "-m", "rankvideo.config", "show", *args], cwd=repo_copy, text=True,
                             capture_output=True, check=True).stdout
    assert recorded == yaml.safe_load(printed)
    if configfiles == ["config/example.yaml", "over.yaml"]:
        assert recorded["rerank"]["shards"] == 3 and differences(recorded) == {}


def test_a_real_model_with_fewer_visual_tokens_than_the_paper_is_warned(tmp_path, caplog):
    demo = VideoSettings.with_tokens(4.0, 8, 4)
    with caplog.at_level("WARNING"):
        message = models.warn_below_paper("Qwen/Qwen3-VL-8B-Instruct", demo)
    assert message and "max_frames 8 < 32" in message and message in caplog.text
    assert models.warn_below_paper("Qwen/Qwen3-VL-8B-Instruct", VideoSettings.paper()) is None
    (tmp_path / "config.json").write_text('{"text_config": {"hidden_size": 128}}')
    assert models.warn_below_paper(tmp_path, demo) is None  # a tiny model built here: no warning
    (tmp_path / "config.json").write_text('{"text_config": {"hidden_size": 4096}}')
    assert models.warn_below_paper(tmp_path, demo)


def test_description_texts_from_a_file_replace_the_describe_step(repo_copy):
    """descriptions.file (e.g. ASR transcripts): stage 2 trains and scores with those texts; the
    describe rule does not run and stage 1 is not needed for it."""
    from test_pipeline import planned_rules

    texts = repo_copy / "texts.jsonl"
    texts.write_text('{"doc_id": "v0001", "text": "a red circle"}\n')
    extra = repo_copy / "texts.yaml"
    extra.write_text("descriptions: {enabled: true, file: texts.jsonl}\n")
    result = snakemake(repo_copy, "-n", "results/metrics.tsv", "--configfile", "config/test.yaml", str(extra))
    plan = result.stdout + result.stderr
    rules = planned_rules(plan)
    assert "describe" not in rules and rules["train_stage2"] == 1, rules
    jobs = [job.split("output:") for job in plan.split("\nrule ")[1:]]  # [inputs, outputs onwards]
    stage2 = [inputs for inputs, rest in jobs if inputs.startswith("train_stage2:")
              or (inputs.startswith("rerank_shard:") and "rerank/stage2/" in rest.split("\n")[0])]
    others = [inputs for inputs, rest in jobs if inputs.startswith("rerank_shard:") and "rerank/stage2/" not in rest.split("\n")[0]]
    assert len(stage2) == 1 + len(others) // 2 == 3 and all("texts.jsonl" in inputs for inputs in stage2)  # 2 shards
    assert others and not any("texts.jsonl" in inputs for inputs in others)  # base, stage1, ... see no texts
