# First stage: BM25 over the per-video transcripts, or a provided run (first_stage.method=file),
# cut to first_stage.depth candidates and written as JSON, TREC run and video2queries.


rule first_stage:
    input:
        unpack(first_stage_inputs),
    output:
        json=RESULTS + "/first_stage/{split}.json",
        trec=RESULTS + "/first_stage/{split}.trec",
        video2queries=RESULTS + "/first_stage/video2queries_{split}.json",
    params:
        method=config["first_stage"]["method"],
        depth=config["first_stage"]["depth"],
        bm25=config["first_stage"]["bm25"],
    log:
        RESULTS + "/logs/first_stage/{split}.log",
    benchmark:
        RESULTS + "/benchmarks/first_stage/{split}.tsv"
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/first_stage.py"
