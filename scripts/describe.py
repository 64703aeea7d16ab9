from rankvideo import logs, pipeline
from rankvideo.generation import captions as generate_captions

with logs.to_file(snakemake.log[0]):
    settings = pipeline.with_tensor_parallel(snakemake.params.settings, dict(snakemake.resources.items()), "describe")
    ids = generate_captions.candidate_ids([snakemake.input.train, snakemake.input.eval], snakemake.input.video2queries)
    pipeline.run_step(
        "captions",
        dict(model=snakemake.input.model, ids=ids, videos=snakemake.params.videos,
             output=snakemake.output.descriptions, failures=snakemake.output.failures, settings=settings,
             video=snakemake.params.video, models=snakemake.params.models, stage1_prompt=True),
        settings["backend"], snakemake.config["environments"], snakemake.output.descriptions + ".step.json")
