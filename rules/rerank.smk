# Reranking: scatter the test candidates over video shards (one job, one GPU on a cluster, each),
# then gather the per-video scores into the system's prediction folder and reranked TREC run.


rule rerank_shard:
    input:
        unpack(rerank_inputs),
    output:
        summary="results/rerank/{system}/shards/{shard}/summary.json",
    params:
        shard=lambda wildcards: int(wildcards.shard),
        shards=config["rerank"]["shards"],
        settings=config["rerank"],
        models=config["models"],
        model=lambda wildcards: model_source(wildcards.system),
        videos=video_source,
    resources:
        gpu=gpus("rerank"),
    threads: 2
    log:
        "results/logs/rerank/{system}/{shard}.log",
    benchmark:
        "results/benchmarks/rerank/{system}/{shard}.tsv"
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/rerank_shard.py"


rule gather_rerank:
    input:
        shards=expand("results/rerank/{{system}}/shards/{shard}/summary.json", shard=SHARDS),
        first_stage="results/first_stage/test.json",
    output:
        predictions=directory("results/rerank/{system}/predictions"),
        run="results/rerank/{system}/run.trec",
        failures="results/rerank/{system}/failures.jsonl",
        summary="results/rerank/{system}/summary.json",
    params:
        evaluation=EVAL,
    log:
        "results/logs/gather_rerank/{system}.log",
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/gather_rerank.py"
