from pathlib import Path

from rankvideo import logs, pipeline

with logs.to_file(snakemake.log[0]):
    settings = pipeline.with_tensor_parallel(snakemake.params.settings, dict(snakemake.resources.items()), "rerank_shard")
    output_dir = Path(snakemake.output.summary).parent
    pipeline.run_step(
        "rerank",
        dict(model=snakemake.params.model, video2queries_path=snakemake.input.video2queries,
             queries_path=snakemake.input.queries, videos=snakemake.params.videos, output_dir=str(output_dir),
             shard=snakemake.params.shard, shards=snakemake.params.shards, rerank_config=settings,
             models_config=snakemake.params.models, model_name=snakemake.wildcards.system,
             descriptions=getattr(snakemake.input, "descriptions", None)),
        settings["backend"], snakemake.config["environments"], str(output_dir) + ".step.json")
# the shard is written and its log closed: skip the interpreter's teardown (a vLLM engine ran in a child
# interpreter of pipeline.run_step, which has ended)
logs.exit_now(0)
