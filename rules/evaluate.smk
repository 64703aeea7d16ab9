# Evaluation with pytrec_eval on the test queries: one rule per system (per-query and summary
# TSVs), then the metrics table with a paired significance test against the first stage, the
# per-query table of the primary measure and a plot of nDCG@k.
rule evaluate:
    input:
        unpack(system_inputs),
    output:
        summary=RESULTS + "/eval/{system}.summary.tsv",
        per_query=RESULTS + "/eval/{system}.per_query.tsv",
    params:
        evaluation=EVAL,
        fusion=fusion_params,
    log:
        RESULTS + "/logs/evaluate/{system}.log",
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/evaluate.py"


rule metrics:
    input:
        summaries=expand(RESULTS + "/eval/{system}.summary.tsv", system=SYSTEMS),
        per_query=expand(RESULTS + "/eval/{system}.per_query.tsv", system=SYSTEMS),
    output:
        table=RESULTS + "/metrics.tsv",
        per_query=f"{RESULTS}/per_query/{EVAL['primary_measure']}.tsv",
        plot=RESULTS + "/plots/ndcg_at_k.png",
    params:
        systems=SYSTEMS,
        measure=EVAL["primary_measure"],
    log:
        RESULTS + "/logs/metrics.log",
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/metrics.py"
