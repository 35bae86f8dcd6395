"""The workflow's config as ``snakemake --configfile`` builds it, for the tools in this folder."""
from pathlib import Path

import yaml
from snakemake.utils import update_config

REPO = Path(__file__).resolve().parents[1]


def merged_config(configfiles=()) -> dict:
    """The repository's ``config.yaml`` with each of ``configfiles`` merged over it in order
    (nested blocks key by key, as ``snakemake --configfile`` does)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    for f in configfiles:
        update_config(cfg, yaml.safe_load(Path(f).read_text()))
    return cfg


def run_masks(results: Path, name: str) -> dict[str, str]:
    """id → PNG path of a finished run's training mask ``name`` (K0, A0, D0): the shard folders
    ``results/masks/<name>/<shard>`` aligned with ``results/splits/train/<shard>.txt``."""
    from ssdd_core.io import id_map

    splits = sorted((Path(results) / "splits" / "train").glob("*.txt"))
    return id_map(splits, [Path(results) / "masks" / name / p.stem for p in splits], ".png")
