# The tiny models of the default config, built locally (no downloads) and loaded downstream
# through the normal from_pretrained path.


rule tiny_model:
    output:
        directory(out("models/tiny-{kind}")),
    params:
        seed=config["models"]["tiny"]["seed"],
        sizes=lambda wildcards: config["models"]["tiny"][wildcards.kind],
    log:
        out("logs/tiny_model/{kind}.log"),
    conda:
        "../envs/rankvideo.yaml"
    script:
        "../scripts/tiny_model.py"
