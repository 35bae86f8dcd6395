# Thin Snakemake script: see ssdd_core.stages.score_seeds
from ssdd_core import stages
from ssdd_core.provenance import provenance
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    i = snakemake.input
    stages.score_seeds(snakemake.params.cfg, list(i.ids), {"K0": list(i.K0), "A0": list(i.A0), "D0": list(i.D0)},
                       list(i.cam), snakemake.output[0], {"provenance": provenance(snakemake.config)})
