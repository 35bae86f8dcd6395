# Thin Snakemake script: see ssdd_core.report.table1
from ssdd_core import report
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    report.table1(snakemake.input.ssdd, snakemake.input.baseline, snakemake.output[0])
