# Thin Snakemake script: see ssdd_core.stages.score
from ssdd_core import stages
from ssdd_core.provenance import provenance
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    stages.score(snakemake.params.cfg["eval"], list(snakemake.input.ids), list(snakemake.input.pred),
                 snakemake.output.json, {"model": snakemake.params.model, "provenance": provenance(snakemake.config)},
                 snakemake.output.confusion)
