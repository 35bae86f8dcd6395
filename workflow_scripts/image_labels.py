# Thin Snakemake script: see ssdd_core.stages.image_labels
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    stages.image_labels(snakemake.params.data, list(snakemake.input), snakemake.output[0])
