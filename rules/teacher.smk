# Teacher reasoning labels for the top-k candidates of each training query, from caption + ASR.


rule teacher_labels:
    input:
        unpack(teacher_inputs),
    output:
        out("teacher/teacher_labels.jsonl"),
    params:
        model=lambda wildcards: model_path("teacher"),
        settings=config["teacher"],
        models=config["models"],
    resources:
        gpu=gpus("teacher"),
    threads: 2
    log:
        out("logs/teacher_labels.log"),
    benchmark:
        out("benchmarks/teacher_labels.tsv")
    conda:
        "../envs/vllm.yaml" if config["teacher"]["backend"] == "vllm" else "../envs/rankvideo.yaml"
    script:
        "../scripts/teacher_labels.py"
