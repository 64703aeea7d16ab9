from rankvideo import config, logs

with logs.to_file(snakemake.log[0]):
    config.write(snakemake.params.config, snakemake.output[0])
