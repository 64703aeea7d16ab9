from rankvideo import logs, pipeline

with logs.to_file(snakemake.log[0]):
    settings = pipeline.with_tensor_parallel(snakemake.params.settings, dict(snakemake.resources.items()), "captions")
    pipeline.run_step(
        "captions",
        dict(model=snakemake.params.model, ids=snakemake.input.ids, videos=snakemake.params.videos,
             output=snakemake.output.captions, failures=snakemake.output.failures, settings=settings,
             video=settings["video"], models=snakemake.params.models),
        settings["backend"], snakemake.config["environments"], snakemake.output.captions + ".step.json")
