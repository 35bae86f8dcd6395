# Thin Snakemake script: see ssdd_core.stages.score
from ssdd_core import stages
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    from ssdd_core.train import config_hash
    cfg = snakemake.params.cfg
    stages.score(cfg["eval"], list(snakemake.input.ids), list(snakemake.input.pred), snakemake.output[0],
                 {"model": snakemake.wildcards.tag.lstrip("_") or "dynamic", "config_hash": config_hash(cfg)})
