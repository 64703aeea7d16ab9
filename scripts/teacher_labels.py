from rankvideo import logs, pipeline

with logs.to_file(snakemake.log[0]):
    settings = pipeline.with_tensor_parallel(snakemake.params.settings, dict(snakemake.resources.items()), "teacher_labels")
    inputs = snakemake.input
    pipeline.run_step(
        "teacher",
        dict(model=snakemake.params.model, queries=inputs.queries, candidates=inputs.candidates,
             captions=inputs.captions, asr=inputs.asr, output=snakemake.output[0], settings=settings,
             models=snakemake.params.models),
        settings["backend"], snakemake.config["environments"], snakemake.output[0] + ".step.json")
