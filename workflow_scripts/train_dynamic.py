# Thin Snakemake script: see ssdd_core.stages.train_dynamic
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    i = snakemake.input
    stages.train_dynamic(snakemake.params.cfg, i.get("cls"), i.labels, list(i.ids), list(i.d0), snakemake.output.model,
                         snakemake.threads, snakemake.output.diag, i.get("static"), snakemake.params.refinement)
