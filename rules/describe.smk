# Descriptions (descriptions.enabled; not in REFERENCE.md): the stage-1 model captions every
# training and test candidate video once; stage 2 is trained and scored with that caption after
# the query.


rule describe:
    input:
        unpack(describe_inputs),
    output:
        descriptions=DESCRIBED,
        failures=out("descriptions/failures.jsonl"),
    params:
        settings=config["descriptions"],
        video=config["train_stage1"]["video"],
        models=config["models"],
        videos=video_source,
    resources:
        gpu=gpus("descriptions"),
    threads: 2
    log:
        out("logs/describe.log"),
    benchmark:
        out("benchmarks/describe.tsv")
    conda:
        "../envs/vllm.yaml" if config["descriptions"]["backend"] == "vllm" else "../envs/rankvideo.yaml"
    script:
        "../scripts/describe.py"
