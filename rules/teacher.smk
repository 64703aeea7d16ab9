# Teacher reasoning labels for the top-k candidates of each training query, from caption + ASR.


rule teacher_labels:
    input:
        unpack(teacher_inputs),
    output:
        RESULTS + "/teacher/teacher_labels.jsonl",
    params:
        model=lambda wildcards: model_path("teacher"),
        settings=config["teacher"],
        models=config["models"],
    resources:
        gpu=gpus("teacher"),
    threads: 2
    log:
        RESULTS + "/logs/teacher_labels.log",
    benchmark:
        RESULTS + "/benchmarks/teacher_labels.tsv"
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/teacher_labels.py"
