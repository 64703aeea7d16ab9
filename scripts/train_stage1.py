from rankvideo import logs, pipeline, train_perception
from rankvideo.training.common import TrainSettings

with logs.to_file(snakemake.log[0]):
    train_perception.train(
        snakemake.params.base, snakemake.input.train, snakemake.input.eval, snakemake.output[0],
        TrainSettings.from_config(snakemake.params.settings, snakemake.params.seed),
        options=pipeline.load_options(snakemake.params.models))
