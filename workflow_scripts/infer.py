# Thin Snakemake script: see ssdd_core.stages.infer
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    stages.infer(snakemake.params.cfg, snakemake.params.kind, snakemake.input.model, snakemake.input.ids,
                 snakemake.output[0], snakemake.threads)
