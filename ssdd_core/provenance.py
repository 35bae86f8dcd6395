"""Provenance of a result: what made a score, so a number in the README can be traced to a run.

Every ``results/*.json`` that holds a score carries :func:`provenance` under ``"provenance"``:
the git commit of the code (and whether its tree was dirty), the config and its hash, package
versions, device and threads, and the seconds per step of the training stages (read from the
lines ``ssdd_core.train.fit`` leaves in the rules' logs: every training log present when the
result was written, so the stages behind it and any others that had run in the same folder).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from .train import RUN_STATS

PACKAGES = ("torch", "torchvision", "snakemake", "numpy", "pydensecrf2", "h5py", "pillow", "efficientnet-lite-pytorch")
REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        p = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def config_hash(cfg: dict) -> str:
    """sha256 (first 16 hex digits) of the config as sorted JSON."""
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def training_stats(log_dir: str | os.PathLike = "logs") -> dict:
    """Per training log under ``log_dir`` (``train_*.log``, ``train_seg/*.log``): the last
    ``run stats`` line of :func:`ssdd_core.train.fit` (steps, seconds, seconds_per_step,
    batch, threads, device), keyed by the log's path relative to ``log_dir``."""
    out = {}
    root = Path(log_dir)
    for p in sorted(root.rglob("*.log")) if root.is_dir() else []:
        rel = p.relative_to(root).as_posix()
        if not rel.startswith("train"):
            continue
        last = None
        with open(p, errors="replace") as f:
            for line in f:
                if RUN_STATS in line:
                    last = line
        if last:
            try:
                out[rel] = json.loads(last.split(RUN_STATS, 1)[1])
            except json.JSONDecodeError:
                continue
    return out


def provenance(cfg: dict | None, log_dir: str | os.PathLike = "logs") -> dict:
    """The provenance record of a result made now with ``cfg`` (module docstring).

    Returns:
        dict: ``commit`` (None outside a git checkout), ``dirty`` (tracked files changed),
        ``config_sha256``, ``config``, ``packages`` (name → version or None), ``python``,
        ``device`` (``cuda`` name or ``cpu``), ``cpu`` (processor, cores), ``threads`` (torch's),
        ``training`` (:func:`training_stats`).
    """
    import torch

    status = _git("status", "--porcelain", "--untracked-files=no")
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "config_sha256": config_hash(cfg) if cfg is not None else None,
        "config": cfg,
        "packages": versions,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu": {"processor": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "threads": torch.get_num_threads(),
        "training": training_stats(log_dir),
    }
