from rankvideo import logs, models
from rankvideo.demo import copy_pretrain

with logs.to_file(snakemake.log[0]):
    settings = snakemake.params.settings
    words = copy_pretrain.vocabulary([(snakemake.input.stage1_train, "caption"), (snakemake.input.train, "query")])
    copy_pretrain.copy_pretrain(snakemake.params.model, snakemake.output[0], words, settings["steps"],
                                settings["batch_size"], settings["lr"], snakemake.params.seed,
                                options=models.load_options(snakemake.params.models))
