from rankvideo import logs, pipeline
from rankvideo.training import launch

with logs.to_file(snakemake.log[0]):
    settings = snakemake.params.settings
    launch.train_stage(
        "stage2", snakemake.params.init, snakemake.input.train, snakemake.input.eval, snakemake.output[0], settings,
        snakemake.params.seed, snakemake.params.models,
        pipeline.train_processes(settings, dict(snakemake.resources.items())), snakemake.threads,
        prompt_variant=snakemake.params.prompt_variant, descriptions=snakemake.input.get("descriptions"))
