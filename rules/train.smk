# Stage 1 (caption SFT), copy pretraining (tiny models only, copy_pretrain.steps > 0), stage 2
# (reranker) training, and the loss curves of both stages.


rule train_stage1:
    input:
        unpack(train_stage1_inputs),
    output:
        directory(out("models/stage1")),
    params:
        base=lambda wildcards: model_path("base"),
        settings=config["train_stage1"],
        models=config["models"],
        seed=config["seed"],
    resources:
        gpu=gpus("train_stage1"),
    threads: 2
    log:
        out("logs/train_stage1.log"),
    benchmark:
        out("benchmarks/train_stage1.tsv")
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/train_stage1.py"


rule copy_pretrain:
    input:
        unpack(copy_pretrain_inputs),
    output:
        directory(out("models/stage1-copy")),
    params:
        model=lambda wildcards: stage1_output(),
        settings=config["copy_pretrain"],
        models=config["models"],
        seed=config["seed"],
    resources:
        gpu=gpus("copy_pretrain"),
    threads: 2
    log:
        out("logs/copy_pretrain.log"),
    benchmark:
        out("benchmarks/copy_pretrain.tsv")
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/copy_pretrain.py"


rule train_stage2:
    input:
        unpack(train_stage2_inputs),
    output:
        directory(out("models/stage2")),
    params:
        init=stage2_init,
        settings=config["train_stage2"],
        prompt_variant=config["rerank"]["prompt_variant"],
        models=config["models"],
        seed=config["seed"],
    resources:
        gpu=gpus("train_stage2"),
    threads: 2
    log:
        out("logs/train_stage2.log"),
    benchmark:
        out("benchmarks/train_stage2.tsv")
    conda:
        "../envs/train.yaml"
    script:
        "../scripts/train_stage2.py"


rule loss_curves:
    input:
        models=expand(out("models/{stage}"), stage=TRAINED),
    output:
        report(out("plots/loss_curves.png"), caption="../report/loss_curves.rst", category="Plots"),
    log:
        out("logs/loss_curves.log"),
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/loss_curves.py"
