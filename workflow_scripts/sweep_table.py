# Thin Snakemake script: see ssdd_core.stages.sweep_table
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    stages.sweep_table(list(snakemake.params.weights), list(snakemake.input), snakemake.output[0])
