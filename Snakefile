# RankVideo pipeline: videos -> captions -> teacher labels -> training data -> stage 1 -> stage 2
# -> reranked runs -> metrics. The default config runs end to end on 2 CPU cores:
#     snakemake --cores all results/metrics.tsv
import sys

from snakemake.utils import min_version

min_version("9.0")

# the package lives beside this file; an installed copy works too
sys.path.insert(0, workflow.basedir)


configfile: "config/config.yaml"


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
    synthetic_benchmark,
    first_stage,
    gather_rerank,
    training_data,
    loss_curves,
    evaluate,
    metrics,


rule all:
    input:
        "results/metrics.tsv",
        "results/training_data/report.json",
        "results/plots/loss_curves.png",
    default_target: True
