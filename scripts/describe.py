from pathlib import Path

from rankvideo import generate_captions, logs, pipeline

with logs.to_file(snakemake.log[0]):
    settings = pipeline.with_tensor_parallel(snakemake.params.settings, snakemake.resources, "describe")
    ids = generate_captions.candidate_ids([snakemake.input.train, snakemake.input.eval], snakemake.input.video2queries)
    generate_captions.run(
        snakemake.input.model, ids, pipeline.resolver(snakemake.params.videos), snakemake.output.descriptions,
        snakemake.output.failures, pipeline.video_settings(snakemake.params.video), settings["max_new_tokens"],
        settings["batch_size"], settings["backend"], stage1_prompt=True,
        options=pipeline.generator_options(settings, snakemake.params.models))
    Path(snakemake.output.failures).touch()
