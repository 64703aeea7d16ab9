from pathlib import Path

from rankvideo import generate_captions, logs, pipeline

with logs.to_file(snakemake.log[0]):
    settings = pipeline.with_tensor_parallel(snakemake.params.settings, snakemake.resources, "captions")
    video = settings["video"]
    generate_captions.run(
        snakemake.params.model, generate_captions.read_ids(snakemake.input.ids),
        pipeline.resolver(snakemake.params.videos), snakemake.output.captions, snakemake.output.failures,
        pipeline.video_settings(video), settings["max_new_tokens"], settings["batch_size"], settings["backend"],
        options=pipeline.generator_options(settings, snakemake.params.models))
    Path(snakemake.output.failures).touch()
