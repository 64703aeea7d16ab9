from pathlib import Path

from rankvideo import logs
from rankvideo.demo.synthetic import SyntheticConfig, generate

with logs.to_file(snakemake.log[0]):
    generate(SyntheticConfig.from_dict(snakemake.params.settings), Path(snakemake.output.summary).parent)
