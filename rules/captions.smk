# Captions of every video that is a first-stage candidate of a training query.


rule captions:
    input:
        unpack(captions_inputs),
    output:
        captions="results/captions/captions.jsonl",
        failures="results/captions/failures.jsonl",
    params:
        model=lambda wildcards: model_path("captioner"),
        settings=config["captions"],
        models=config["models"],
        videos=video_source,
    resources:
        gpu=gpus("captions"),
    threads: 2
    log:
        "results/logs/captions.log",
    benchmark:
        "results/benchmarks/captions.tsv"
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/captions.py"
