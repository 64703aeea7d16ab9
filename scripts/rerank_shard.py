from pathlib import Path

from rankvideo import logs
from rankvideo.rerank import run_shard

with logs.to_file(snakemake.log[0]):
    run_shard(snakemake.params.model, snakemake.input.video2queries,
              snakemake.input.queries, snakemake.params.videos, Path(snakemake.output.summary).parent,
              snakemake.params.shard, snakemake.params.shards, snakemake.params.settings, snakemake.params.models,
              model_name=snakemake.wildcards.system)
