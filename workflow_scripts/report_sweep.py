# Thin Snakemake script: see ssdd_core.report
from ssdd_core import report
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    report.sweep_plot(snakemake.input[0], snakemake.output[0])
