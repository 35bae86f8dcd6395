# Thin Snakemake script: see ssdd_core.report.sweep_table
from ssdd_core import report
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    report.sweep_table(list(snakemake.params.weights), list(snakemake.input), snakemake.output[0])
