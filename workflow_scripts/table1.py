# Thin Snakemake script: see ssdd_core.stages.table1
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    stages.table1(snakemake.input.ssdd, snakemake.input.baseline, snakemake.output[0])
