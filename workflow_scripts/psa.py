# Thin Snakemake script: see ssdd_core.stages.psa
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    stages.psa(snakemake.params.cfg, snakemake.input.model, snakemake.input.cam, snakemake.output.probs,
               snakemake.output.masks, snakemake.threads)
