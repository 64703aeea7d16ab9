from rankvideo import generate_captions, logs, pipeline

with logs.to_file(snakemake.log[0]):
    settings = pipeline.with_tensor_parallel(snakemake.params.settings, snakemake.resources, "describe")
    ids = generate_captions.candidate_ids([snakemake.input.train, snakemake.input.eval], snakemake.input.video2queries)
    pipeline.run_step(
        "captions",
        dict(model=snakemake.input.model, ids=ids, videos=snakemake.params.videos,
             output=snakemake.output.descriptions, failures=snakemake.output.failures, settings=settings,
             video=snakemake.params.video, models=snakemake.params.models, stage1_prompt=True),
        settings["backend"], snakemake.config["environments"], snakemake.output.descriptions + ".step.json")
