from rankvideo import logs
from rankvideo.evaluation.metrics import plot_loss_curves

with logs.to_file(snakemake.log[0]):
    plot_loss_curves(snakemake.input.models, snakemake.output[0])
