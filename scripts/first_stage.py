from rankvideo import logs
from rankvideo.data import first_stage

with logs.to_file(snakemake.log[0]):
    out, params = snakemake.output, snakemake.params
    if params.method == "bm25":
        first_stage.run_bm25_stage(snakemake.input.queries, snakemake.input.documents, params.depth, out.json,
                                   out.trec, out.video2queries, k1=params.bm25["k1"], b=params.bm25["b"])
    else:
        first_stage.run_import_stage(snakemake.input.run, snakemake.input.queries, params.depth, out.json,
                                     out.trec, out.video2queries)
