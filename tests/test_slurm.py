"""The tiny pipeline submitted through profiles/slurm to a local single-node Slurm.

Run with `python -m pytest -m slurm` (needs root to apt-get install slurm-wlm and munge when
they are missing). Resources of the cluster profile are adapted to the one small node the way
a user adapts them to their cluster: no GPUs (gres dropped), small memory / runtime requests.
"""
import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO, copy_workflow

pytestmark = pytest.mark.slurm


@pytest.fixture
def local_slurm(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the local Slurm test needs root")
    d = tmp_path / "slurm"
    script = REPO / "tests" / "slurm" / "local_slurm.sh"
    p = subprocess.run(["bash", str(script), "start", str(d)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    try:
        yield p.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(script), "stop", str(d)], timeout=60)


def test_tiny_pipeline_through_slurm_profile(local_slurm, tmp_path):
    (tmp_path / "wf").mkdir()
    wf = copy_workflow(tmp_path / "wf")
    prof = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    prof["jobs"] = 2
    prof["default-resources"] = {"mem_mb": 3000, "runtime": 30, "slurm_partition": "debug"}
    prof["set-resources"] = {rule: {"mem_mb": 3000, "runtime": 30} for rule in prof["set-resources"]}
    (wf / "profiles" / "slurm-local").mkdir()
    (wf / "profiles" / "slurm-local" / "config.yaml").write_text(yaml.safe_dump(prof))
    env = dict(os.environ, PATH=f"{local_slurm}:{os.environ['PATH']}")
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm-local", "results/miou.json",
                        "--configfile", "config/tiny.yaml"], cwd=wf, env=env, capture_output=True, text=True,
                       timeout=1800)
    elapsed = time.time() - t0
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-6000:])
    res = json.loads((wf / "results" / "miou.json").read_text())
    assert res["n_images"] == 6 and 0 <= res["miou"] <= 1
    assert "sbatch" in p.stderr or "SLURM" in p.stderr or "slurm" in p.stderr.lower()
    print(f"slurm run: {elapsed:.0f} s")
