import logging

from rankvideo import logs
from rankvideo.evaluation.evaluate import evaluate_system, write_system_results

with logs.to_file(snakemake.log[0]):
    settings = snakemake.params.evaluation
    result = evaluate_system(
        snakemake.input.first_stage, snakemake.input.qrels, snakemake.input.get("predictions"),
        rerank_depth=settings["rerank_depth"], output_depth=settings["output_depth"], ks=settings["ks"],
        score_field=settings["score_field"], only_scored_queries=settings["only_scored_queries"],
        queries=snakemake.input.queries, fusion=snakemake.params.fusion)
    logging.getLogger("rankvideo.evaluation.evaluate").info("\n%s", result.report())
    write_system_results(result, snakemake.wildcards.system, snakemake.output.summary, snakemake.output.per_query)
