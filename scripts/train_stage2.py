from rankvideo import logs, pipeline, train_reranker
from rankvideo.training.common import TrainSettings
from rankvideo.training.losses import LossWeights

with logs.to_file(snakemake.log[0]):
    settings = snakemake.params.settings
    train_reranker.train(
        snakemake.params.init, snakemake.input.train, snakemake.input.eval, snakemake.output[0],
        TrainSettings.from_config(settings, snakemake.params.seed), LossWeights.from_config(settings),
        num_negs=settings["num_negs"], options=pipeline.load_options(snakemake.params.models))
