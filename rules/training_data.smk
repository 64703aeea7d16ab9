# Training JSONL for both stages, split by query, with a report of what stage 2 can use.


rule training_data:
    input:
        unpack(training_data_inputs),
    output:
        train=out("training_data/train.jsonl"),
        eval=out("training_data/eval.jsonl"),
        stage1_train=out("training_data/stage1_train.jsonl"),
        stage1_eval=out("training_data/stage1_eval.jsonl"),
        report=out("training_data/report.json"),
        report_md=report(out("training_data/report.md"), caption="../report/training_data.rst", category="Training data"),
    params:
        settings=config["training_data"],
        seed=config["seed"],
        videos=video_source,
        perception=perception_source(),
    log:
        out("logs/training_data.log"),
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/training_data.py"
