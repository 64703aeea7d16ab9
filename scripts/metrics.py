from rankvideo import logs
from rankvideo.evaluation.metrics import build_metrics_table

with logs.to_file(snakemake.log[0]):
    systems = snakemake.params.systems
    build_metrics_table(dict(zip(systems, snakemake.input.per_query)), dict(zip(systems, snakemake.input.summaries)),
                        snakemake.output.table, snakemake.output.per_query, snakemake.output.plot,
                        baseline="first_stage", measure=snakemake.params.measure,
                        win_loss_tsv=snakemake.output.win_loss, win_loss_plot=snakemake.output.win_loss_plot,
                        seed=snakemake.params.seed)
