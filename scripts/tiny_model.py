from rankvideo import logs
from rankvideo.demo.tiny_model import build_tiny_text_model, build_tiny_vlm

with logs.to_file(snakemake.log[0]):
    build = build_tiny_vlm if snakemake.wildcards.kind == "vlm" else build_tiny_text_model
    build(snakemake.output[0], seed=snakemake.params.seed, **snakemake.params.sizes)
