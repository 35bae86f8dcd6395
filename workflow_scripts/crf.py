# Thin Snakemake script: see ssdd_core.stages.crf
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    stages.crf(snakemake.params.cfg, snakemake.input.probs, snakemake.output.masks, snakemake.threads)
