"""The Slurm profile: the sbatch GPU flags of a GPU rule, rendered by the executor plugin (default
run), and the tiny pipeline submitted through profiles/slurm to a local single-node Slurm.

The second needs `python -m pytest -m slurm` (and root to apt-get install slurm-wlm and munge
when they are missing). Resources of the cluster profile are adapted to the one small node the
way a user adapts them to their cluster: small memory / runtime requests; the tiny config's
`device: cpu` asks for no GPU.
"""
import json
import os
import subprocess
import sys
import time

import pytest
import yaml
from conftest import REPO, copy_workflow


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


@pytest.mark.slurm
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
    # The jobs went through sbatch: the plugin names each Slurm job id, and the local controller
    # logged the submission of each of them.
    import re

    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", p.stderr))
    rules = set(re.findall(r"^rule (\w+):", p.stdout + p.stderr, flags=re.M))
    assert {"train_cls", "cam", "psa", "train_static", "train_dynamic", "infer"} <= rules, rules
    assert len(submitted) >= 6 and len(set(submitted.values())) == len(submitted), p.stderr[-3000:]
    ctld = (tmp_path / "slurm" / "log" / "slurmctld.log").read_text()
    logged = set(re.findall(r"JobId=(\d+)", ctld))
    assert set(submitted.values()) <= logged, (sorted(submitted.values()), sorted(logged))
    print(f"slurm run: {elapsed:.0f} s")


def _dry_run_resources(wf, rule, *config):
    """The resources Snakemake gives ``rule``'s job under profiles/slurm (dry run: no Slurm)."""
    from conftest import snakemake

    p = snakemake(wf, "-n", "--profile", "profiles/slurm", "results/models/cls.pt", "--configfile",
                  "config/tiny.yaml", "--config", *config)
    block = p.stdout.split(f"rule {rule}:", 1)[1]
    line = next(ln for ln in block.splitlines() if ln.strip().startswith("resources:"))
    return dict(kv.split("=", 1) for kv in line.split(":", 1)[1].strip().split(", "))


@pytest.mark.parametrize("device, gpus", [("cuda", " --gpus=1"), ("cpu", "")])
def test_gpu_rule_sbatch_flags_through_the_plugin(tmp_path, device, gpus):
    """A GPU rule's sbatch GPU flags, rendered by the Slurm executor plugin's own functions from
    the resources the profile gives the job: one GPU request, never both `gpu` and `gres`."""
    plugin_utils = pytest.importorskip("snakemake_executor_plugin_slurm.utils")
    partitions = pytest.importorskip("snakemake_executor_plugin_slurm.partitions")
    wf = copy_workflow(tmp_path)
    res = _dry_run_resources(wf, "train_cls", f"device={device}")

    class Resources(dict):
        __getattr__ = dict.__getitem__

    class Job:
        resources = Resources({k: int(v) if v.isdigit() else v for k, v in res.items()})

    assert "gres" not in res, res
    assert plugin_utils.set_gres_string(Job) == gpus
    assert partitions.parse_gpu_requirements(Job)[0] == (1 if device == "cuda" else 0)
