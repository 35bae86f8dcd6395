# Thin Snakemake script: see ssdd_core.stages.integrate
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    i = snakemake.input
    stages.integrate(snakemake.params.cfg, i.model, i.labels, i.ids, i.k0, i.a0, snakemake.output.masks,
                     snakemake.output.dd, snakemake.threads)
