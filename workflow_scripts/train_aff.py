# Thin Snakemake script: see ssdd_core.stages.train_aff
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    stages.train_aff(snakemake.params.cfg, snakemake.input.labels, list(snakemake.input.aff), snakemake.output[0],
                     snakemake.threads)
