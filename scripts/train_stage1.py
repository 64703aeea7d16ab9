from rankvideo import launch, logs

with logs.to_file(snakemake.log[0]):
    launch.train_rule(snakemake, "stage1", snakemake.params.base)
