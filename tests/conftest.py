import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "voc12_sample"


@pytest.fixture(scope="session")
def sample():
    """The real VOC sample shipped in ``data/voc12_sample`` (SBD masks as GT). Tests use only
    files of the clone: ``../shared`` (the larger voc2012_mini) is for configs, never for tests."""
    from ssdd_core.data import VOCRoot

    return VOCRoot(SAMPLE, "SegmentationClassAug")


def copy_workflow(dst: Path) -> Path:
    """A runnable copy of the workflow in ``dst`` (code copied, data symlinked)."""
    for name in ("Snakefile", "config.yaml"):
        shutil.copy2(REPO / name, dst / name)
    for name in ("rules", "workflow_scripts", "config", "profiles", "tests", "report"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
    (dst / "data").mkdir()
    (dst / "data" / "voc12_sample").symlink_to(SAMPLE)
    return dst


def snakemake(cwd, *args, check=True, timeout=900):
    cmd = [sys.executable, "-m", "snakemake", *args]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}")
    return p
