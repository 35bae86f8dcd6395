# Thin Snakemake script: see ssdd_core.stages.cam
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    stages.cam(snakemake.params.cfg, snakemake.input.model, snakemake.input.ids, snakemake.input.labels,
              snakemake.output[0], snakemake.threads)
