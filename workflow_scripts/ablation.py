# Thin Snakemake script: see ssdd_core.report.ablation_table
from ssdd_core import report
from ssdd_core.provenance import provenance
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    i = snakemake.input
    report.ablation_table({"K0": list(i.K0), "A0": list(i.A0), "D0": list(i.D0), "DYN0": list(i.DYN0),
                           "SSDD": list(i.SSDD)},
                          snakemake.output.md, snakemake.output.json, {"provenance": provenance(snakemake.config)})
