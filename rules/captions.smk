# Captions of every video that is a first-stage candidate of a training query.


rule captions:
    input:
        unpack(captions_inputs),
    output:
        captions=RESULTS + "/captions/captions.jsonl",
        failures=RESULTS + "/captions/failures.jsonl",
    params:
        model=lambda wildcards: model_path("captioner"),
        settings=config["captions"],
        models=config["models"],
        videos=video_source,
    resources:
        gpu=gpus("captions"),
    threads: 2
    log:
        RESULTS + "/logs/captions.log",
    benchmark:
        RESULTS + "/benchmarks/captions.tsv"
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/captions.py"
