# Thin Snakemake script: see ssdd_core.stages.train_cls
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    stages.train_cls(snakemake.params.cfg, snakemake.input.labels, snakemake.output[0], snakemake.threads)
