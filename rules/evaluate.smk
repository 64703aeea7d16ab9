# Evaluation with pytrec_eval on the test queries: one rule per system (per-query and summary
# TSVs), then the metrics table with a paired significance test against the first stage, the
# per-query table of the primary measure, the per-query wins and losses against the first stage
# and plots of both with bootstrap intervals (all in `snakemake --report`).
rule evaluate:
    input:
        unpack(system_inputs),
    output:
        summary=out("eval/{system}.summary.tsv"),
        per_query=out("eval/{system}.per_query.tsv"),
    params:
        evaluation=EVAL,
        fusion=fusion_params,
    log:
        out("logs/evaluate/{system}.log"),
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/evaluate.py"


rule metrics:
    input:
        summaries=expand(out("eval/{system}.summary.tsv"), system=SYSTEMS),
        per_query=expand(out("eval/{system}.per_query.tsv"), system=SYSTEMS),
    output:
        table=report(out("metrics.tsv"), caption="../report/metrics.rst", category="Metrics"),
        per_query=report(
            f"{RESULTS}/per_query/{EVAL['primary_measure']}.tsv",
            caption="../report/per_query.rst",
            category="Per query",
        ),
        plot=report(out("plots/ndcg_at_k.png"), caption="../report/ndcg_at_k.rst", category="Plots"),
        win_loss=report(
            f"{RESULTS}/per_query/win_loss_{EVAL['primary_measure']}.tsv",
            caption="../report/win_loss_table.rst",
            category="Per query",
        ),
        win_loss_plot=report(out("plots/win_loss.png"), caption="../report/win_loss.rst", category="Plots"),
    params:
        systems=SYSTEMS,
        measure=EVAL["primary_measure"],
        seed=config["seed"],
    log:
        out("logs/metrics.log"),
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/metrics.py"
