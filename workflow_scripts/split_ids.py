# Thin Snakemake script: see ssdd_core.stages.split_ids
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    src = snakemake.params.source
    stages.split_ids(src["root"], src["split"], list(snakemake.output))
