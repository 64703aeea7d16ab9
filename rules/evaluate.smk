# Evaluation with pytrec_eval on the test queries: one rule per system (per-query and summary
# TSVs), then the metrics table with a paired significance test against the first stage, the
# per-query table of the primary measure and a plot of nDCG@k.
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
        table=out("metrics.tsv"),
        per_query=f"{RESULTS}/per_query/{EVAL['primary_measure']}.tsv",
        plot=out("plots/ndcg_at_k.png"),
    params:
        systems=SYSTEMS,
        measure=EVAL["primary_measure"],
    log:
        out("logs/metrics.log"),
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/metrics.py"
