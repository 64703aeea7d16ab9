# Evaluation with pytrec_eval on the test queries: one rule per system (per-query and summary
# TSVs), then the metrics table with a paired significance test against the first stage, the
# per-query table of the primary measure and a plot of nDCG@k.
rule evaluate:
    input:
        unpack(system_inputs),
    output:
        summary="results/eval/{system}.summary.tsv",
        per_query="results/eval/{system}.per_query.tsv",
    params:
        evaluation=EVAL,
        fusion=fusion_params,
    log:
        "results/logs/evaluate/{system}.log",
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/evaluate.py"


rule metrics:
    input:
        summaries=expand("results/eval/{system}.summary.tsv", system=SYSTEMS),
        per_query=expand("results/eval/{system}.per_query.tsv", system=SYSTEMS),
    output:
        table="results/metrics.tsv",
        per_query=f"results/per_query/{EVAL['primary_measure']}.tsv",
        plot="results/plots/ndcg_at_k.png",
    params:
        systems=SYSTEMS,
        measure=EVAL["primary_measure"],
    log:
        "results/logs/metrics.log",
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/metrics.py"
