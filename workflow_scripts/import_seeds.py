# Thin Snakemake script: see ssdd_core.stages.import_seeds
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    i, o = snakemake.input, snakemake.output
    stages.import_seeds(snakemake.params.cfg, i.ids, i.labels, o.probs, o.masks)
