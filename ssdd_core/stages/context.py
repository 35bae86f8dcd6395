"""What every stage shares, built once per rule: the config, the threads, the device (after
seeding), the training data root and the image-level labels."""
from __future__ import annotations

import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property

import torch
from tqdm import tqdm

from ..data import VOCRoot
from ..io import read_json
from ..train import _TqdmLog, config_hash, fit, pick_device, seed_everything

log = logging.getLogger("ssdd")


def progress(it, desc, total=None, logger=log):
    """A tqdm bar that writes to the rule's log every 10 s."""
    return tqdm(it, desc=desc, total=total, mininterval=10, file=_TqdmLog(logger))


@contextmanager
def ordered_map(fn, items, workers: int = 1):
    """``fn`` over ``items``, results in the order of ``items`` (issue 29: the CRF rules keep the
    cores of their job busy). ``workers`` ≤ 1 (or one item): in this process, lazily. Else a pool of
    ``workers`` forked processes gets every item at once, so the workers fork here, before the
    caller opens its output files (enter the context first); ``fn`` and the items must pickle
    (a module-level function, ``functools.partial`` of one). Per-item work is independent, so the
    results are the same either way.

    Yields:
        an iterator over ``fn(item)``; an exception of ``fn`` is raised when its result is reached.
        Leaving the context early cancels the items not yet started.
    """
    items = list(items)
    if workers <= 1 or len(items) <= 1:
        yield map(fn, items)
        return
    # fork (as InLoopCRF and infer): "spawn" would re-run Snakemake's script file in the child
    pool = ProcessPoolExecutor(min(int(workers), len(items)), mp_context=multiprocessing.get_context("fork"))
    try:
        futures = [pool.submit(fn, x) for x in items]
        yield (f.result() for f in futures)
    finally:
        pool.shutdown(cancel_futures=True)


@dataclass
class StageContext:
    """One rule's run: ``cfg`` (the validated config blocks the rule gets), ``threads``, and
    ``labels_json`` (the image-level labels, when the stage reads them).

    With ``torch_setup`` (the default) it sets torch's thread count and seeds every RNG with
    ``cfg["seed"]`` at construction, before any model is built, and picks the device
    (``cfg["device"]``). Config values are read as given: the defaults live in the schema (and
    ``config.yaml``), not in the code.
    """

    cfg: dict
    threads: int = 2
    labels_json: str | None = None
    torch_setup: bool = True
    device: torch.device | None = field(default=None, init=False)

    def __post_init__(self):
        if self.torch_setup:
            torch.set_num_threads(max(1, int(self.threads)))
            seed_everything(int(self.cfg["seed"]))
            self.device = pick_device(self.cfg["device"])

    @cached_property
    def voc(self) -> VOCRoot:
        """The training data (``data.root``, ``data.gt_dir``)."""
        return VOCRoot(self.cfg["data"]["root"], self.cfg["data"]["gt_dir"])

    @cached_property
    def labels(self) -> dict[str, list[int]]:
        """id → image-level labels (VOC class ids 1..20) of the training ids."""
        if self.labels_json is None:
            raise ValueError("this stage was given no labels file")
        return read_json(self.labels_json)["labels"]

    def fit(self, model, dataset, step, out: str, block: dict, schedule: str, key: list, on_epoch_end=None) -> dict:
        """:func:`ssdd_core.train.fit` with a training block's settings (``epochs``, ``batch``,
        ``lr``, ``weight_decay``, ``head_lr_mult`` (10 when the block has none), ``max_steps``) and the
        run's seed, device, threads, AMP and NaN policy; ``key`` (config blocks and input files) makes
        the resume key."""
        return fit(model, dataset, step, out, epochs=block["epochs"], batch_size=block["batch"], lr=block["lr"],
                   weight_decay=block["weight_decay"], new_lr_mult=block.get("head_lr_mult", 10.0),
                   schedule=schedule, device=self.device, seed=self.cfg["seed"],
                   threads=self.threads, nan_policy=self.cfg["nan_policy"], resume_key=config_hash(key),
                   amp=self.cfg["amp"], max_steps=block.get("max_steps"), logger=log, on_epoch_end=on_epoch_end)
