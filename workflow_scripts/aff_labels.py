# Thin Snakemake script: see ssdd_core.stages.aff_labels
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    stages.aff_labels(snakemake.params.cfg, snakemake.input.cam, snakemake.output[0], snakemake.threads)
