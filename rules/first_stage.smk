# First stage: BM25 over the per-video transcripts, or a provided run (first_stage.method=file),
# cut to first_stage.depth candidates and written as JSON, TREC run and video2queries.


rule first_stage:
    input:
        unpack(first_stage_inputs),
    output:
        json=out("first_stage/{split}.json"),
        trec=out("first_stage/{split}.trec"),
        video2queries=out("first_stage/video2queries_{split}.json"),
    params:
        method=config["first_stage"]["method"],
        depth=config["first_stage"]["depth"],
        bm25=config["first_stage"]["bm25"],
    log:
        out("logs/first_stage/{split}.log"),
    benchmark:
        out("benchmarks/first_stage/{split}.tsv")
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/first_stage.py"
