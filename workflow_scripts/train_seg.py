# Thin Snakemake script: see ssdd_core.stages.train_seg
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    i = snakemake.input
    stages.train_seg(snakemake.params.cfg, i.get("cls"), i.labels, list(i.ids), list(i.masks), snakemake.output[0],
                     snakemake.threads, i.get("static"))
