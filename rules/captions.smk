# Captions of every video that is a first-stage candidate of a training query.


rule captions:
    input:
        unpack(captions_inputs),
    output:
        captions=out("captions/captions.jsonl"),
        failures=out("captions/failures.jsonl"),
    params:
        model=lambda wildcards: model_path("captioner"),
        settings=config["captions"],
        models=config["models"],
        videos=video_source,
    resources:
        gpu=gpus("captions"),
    threads: 2
    log:
        out("logs/captions.log"),
    benchmark:
        out("benchmarks/captions.tsv")
    conda:
        "../envs/vllm.yaml" if config["captions"]["backend"] == "vllm" else "../envs/rankvideo.yaml"
    script:
        "../scripts/captions.py"
