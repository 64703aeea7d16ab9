# The synthetic benchmark (dataset.kind=synthetic): videos, queries, qrels, reference captions
# and ASR-like transcripts, byte-identical for a seed.


rule synthetic_benchmark:
    output:
        videos=directory(f"{BENCHMARK}/videos"),
        queries_train=f"{BENCHMARK}/queries_train.tsv",
        queries_test=f"{BENCHMARK}/queries_test.tsv",
        qrels=f"{BENCHMARK}/qrels.txt",
        captions=f"{BENCHMARK}/captions_reference.jsonl",
        transcripts=f"{BENCHMARK}/transcripts.jsonl",
        attributes=f"{BENCHMARK}/videos.jsonl",
        summary=f"{BENCHMARK}/summary.json",
        perception_videos=directory(f"{BENCHMARK}/perception/videos"),
        perception_captions=f"{BENCHMARK}/perception/captions_reference.jsonl",
        perception_attributes=f"{BENCHMARK}/perception/videos.jsonl",
    params:
        settings=DATASET["synthetic"],
    log:
        out("logs/synthetic_benchmark.log"),
    benchmark:
        out("benchmarks/synthetic_benchmark.tsv")
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/synthetic_benchmark.py"
