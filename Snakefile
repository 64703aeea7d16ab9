# RankVideo pipeline: videos -> captions -> teacher labels -> training data -> stage 1 -> stage 2
# -> reranked runs -> metrics. The default config runs end to end on 2 CPU cores:
#     snakemake --cores all results/metrics.tsv
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

# the package lives beside this file; an installed copy works too
sys.path.insert(0, workflow.basedir)

from rankvideo import config as rv_config

# The effective configuration (rankvideo.config.resolve, also `python -m rankvideo.config show`):
# config/config.yaml, the tiny-model demo, only when no --configfile is given; a given config file
# starts from the schema's defaults (the reference method) and never inherits the demo's settings.
try:
    _effective = rv_config.resolve(
        [str(path) for path in workflow.overwrite_configfiles],
        dict(workflow.config_settings.config),
        Path(workflow.basedir) / rv_config.DEFAULT_CONFIGFILE,
    )
except rv_config.ConfigError as error:
    raise ValueError(str(error)) from None
config.clear()
config.update(_effective)


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/first_stage.smk"
include: "rules/models.smk"
include: "rules/captions.smk"
include: "rules/describe.smk"
include: "rules/teacher.smk"
include: "rules/training_data.smk"
include: "rules/train.smk"
include: "rules/rerank.smk"
include: "rules/evaluate.smk"


# light rules run on the submitting node under --profile slurm
localrules:
    all,
    effective_config,
    synthetic_benchmark,
    first_stage,
    gather_rerank,
    training_data,
    loss_curves,
    evaluate,
    metrics,


rule all:
    input:
        out("metrics.tsv"),
        # the training's report and loss curves where a system needs a trained checkpoint
        *([out("training_data/report.json"), out("plots/loss_curves.png")] if NEEDS_TRAINING else []),
    default_target: True


# the configuration this run resolved to (rankvideo.config.resolve), as `python -m rankvideo.config show` prints it
rule effective_config:
    output:
        out("effective_config.yaml"),
    params:
        config=config,
    log:
        out("logs/effective_config.log"),
    conda:
        "envs/rankvideo.yaml"
    script:
        "scripts/effective_config.py"
