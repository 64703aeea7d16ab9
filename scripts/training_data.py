from pathlib import Path

from rankvideo import logs
from rankvideo.data import training_data
from rankvideo.video import VideoResolver

with logs.to_file(snakemake.log[0]):
    settings, inputs = snakemake.params.settings, snakemake.input
    training_data.build(
        inputs.queries, inputs.qrels, inputs.run, inputs.teacher, inputs.asr, inputs.captions,
        VideoResolver.from_config(snakemake.params.videos), Path(snakemake.output.train).parent, settings["depth"],
        settings["eval_fraction"], snakemake.params.seed, settings["stage1_captions"],
        stage1_captions=inputs.get("stage1_captions"), positive_grade=settings["positive_grade"],
        random_judged=settings["random_judged"], perception_captions=inputs.get("perception_captions"),
        perception_videos=VideoResolver.from_config(snakemake.params.perception) if snakemake.params.perception else None)
