# Reranking: scatter the test candidates over video shards (one job, one GPU on a cluster, each),
# then gather the per-video scores into the system's prediction folder and reranked TREC run.


rule rerank_shard:
    input:
        unpack(rerank_inputs),
    output:
        summary=out("rerank/{system}/shards/{shard}/summary.json"),
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
        out("logs/rerank/{system}/{shard}.log"),
    benchmark:
        out("benchmarks/rerank/{system}/{shard}.tsv")
    conda:
        "../envs/vllm.yaml" if config["rerank"]["backend"] == "vllm" else "../envs/rankvideo.yaml"
    script:
        "../scripts/rerank_shard.py"


rule gather_rerank:
    input:
        shards=expand(out("rerank/{{system}}/shards/{shard}/summary.json"), shard=SHARDS),
        first_stage=out("first_stage/test.json"),
    output:
        predictions=directory(out("rerank/{system}/predictions")),
        run=out("rerank/{system}/run.trec"),
        failures=out("rerank/{system}/failures.jsonl"),
        summary=out("rerank/{system}/summary.json"),
    params:
        evaluation=EVAL,
    log:
        out("logs/gather_rerank/{system}.log"),
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/gather_rerank.py"
