from pathlib import Path

from rankvideo import logs, pipeline
from rankvideo.rerank import run_shard

with logs.to_file(snakemake.log[0]):
    run_shard(snakemake.params.model, snakemake.input.video2queries,
              snakemake.input.queries, snakemake.params.videos, Path(snakemake.output.summary).parent,
              snakemake.params.shard, snakemake.params.shards,
              pipeline.with_tensor_parallel(snakemake.params.settings, snakemake.resources, "rerank_shard"), snakemake.params.models,
              model_name=snakemake.wildcards.system, descriptions=getattr(snakemake.input, "descriptions", None))
