from rankvideo import generate_reasoning, logs, pipeline

with logs.to_file(snakemake.log[0]):
    settings = pipeline.with_tensor_parallel(snakemake.params.settings, snakemake.resources, "teacher_labels")
    inputs = snakemake.input
    generate_reasoning.run(
        snakemake.params.model, inputs.queries, inputs.candidates, inputs.captions, inputs.asr, snakemake.output[0],
        settings["topk"], settings["batch_size"], settings["reasoning_maxlen"], settings["backend"],
        options=pipeline.generator_options(settings, snakemake.params.models))
