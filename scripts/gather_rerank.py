from pathlib import Path

from rankvideo import logs
from rankvideo.scoring.rerank import gather

with logs.to_file(snakemake.log[0]):
    settings = snakemake.params.evaluation
    gather([Path(p).parent for p in snakemake.input.shards], snakemake.input.first_stage, snakemake.output.predictions,
           snakemake.output.run, snakemake.output.failures, snakemake.output.summary, settings["rerank_depth"],
           settings["output_depth"], settings["score_field"])
