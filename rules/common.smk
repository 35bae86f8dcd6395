# Helpers shared by every rule file: config validation, shard names, input functions.
import os
from pathlib import Path

from snakemake.utils import validate

from ssdd_core.config import check_walk_scale, coerce_cli_strings

# `--config crf='{"bi_w": 5}'` arrives as strings: convert to the schema's types, then validate.
coerce_cli_strings(config, workflow.source_path("../config/config.schema.yaml"))
validate(config, schema="../config/config.schema.yaml")
# The random walk must run at the scale AffinityNet was trained at (issue 17).
_walk_problem = config["psa"]["walk_long_side"] is not None and check_walk_scale(
    config["psa"]["walk_long_side"], config["aff"]["crop"], config["aff"]["scale_range"], " (psa.walk_long_side)")
if _walk_problem:
    raise ValueError(f"config: {_walk_problem}")

SHARDS = [f"{i:03d}" for i in range(config["shards"])]

# Seed source (issue 20): the PSA chain, or another method's seeds imported by import_seeds.
PSA_SEEDS = config["seeds"]["source"] == "psa"
if not PSA_SEEDS and not config["seeds"]["dir"]:
    raise ValueError("config: seeds.source is 'precomputed' but seeds.dir is not set (the folder of the seeds)")


def classifier_input(wildcards=None) -> dict:
    """The PSA classifier that initialises the seg models' encoder; none (ImageNet weights) with
    precomputed seeds, whose rule graph has no classifier."""
    return {"cls": "results/models/cls.pt"} if PSA_SEEDS else {}



def _gpu_visible() -> bool:
    """A CUDA device node or a non-empty CUDA_VISIBLE_DEVICES (cheap: no torch import)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return env.strip() not in ("", "-1")
    return any(Path("/dev").glob("nvidia[0-9]*"))


# Rules that run on the device claim `gpu` (the default profile allows gpu=1, so they take
# turns on one GPU). On a CPU-only machine they claim none, so 1-thread shards (infer) run
# side by side; 2-thread training rules still take the 2 cores one at a time.
DEVICE_GPU = 1 if config["device"] == "cuda" or (config["device"] == "auto" and _gpu_visible()) else 0


def shards(pattern, **kw):
    """Expand a per-shard path pattern over all shards."""
    return expand(pattern, shard=SHARDS, **kw)


# Seg-training runs: run 0 has no suffix, run r > 0 the suffix "-r<r>" (config `repeats`).
REP = r"(?:-r[1-9]\d*)?"
REPS = [""] + [f"-r{r}" for r in range(1, config["repeats"])]


def rep_index(rep: str) -> int:
    """0 for "", r for "-r<r>"."""
    return int(rep[2:]) if rep else 0


def with_rep_seed(cfg: dict, rep: str) -> dict:
    """A rule's config blocks with the run's seed (config seed + run index)."""
    return {**cfg, "seed": config["seed"] + rep_index(rep)}


# The seg models inferred and scored: the SSDD dynamic model, the static stage's model and the
# static-only rows (L_seg alone on m^K0 / m^A0 / m^D0; paper Fig. 8), each with its run suffix.
SEG_KINDS = r"dynamic|static|seg_(?:K0|A0|D0)"


def model_kind(model: str) -> str:
    """``stages.infer``'s model kind of a model name: dynamic, static or seg."""
    base = model.split("-r")[0]
    return "seg" if base.startswith("seg_") else base


wildcard_constraints:
    shard=r"\d{3}",
    set="train|eval",
    model=rf"(?:{SEG_KINDS}){REP}",
    mask="K0|A0|D0",
    rep=REP,


rule split_ids:
    """Split the training (train) or evaluation (eval) id list into shards."""
    output:
        shards("results/splits/{{set}}/{shard}.txt"),
    params:
        source=lambda w: (
            {"root": config["data"]["root"], "split": config["data"]["train_split"]}
            if w.set == "train"
            else {"root": config["eval"]["root"], "split": config["eval"]["split"]}
        ),
    log:
        "logs/split_ids/{set}.log",
    script:
        "../workflow_scripts/split_ids.py"


rule image_labels:
    """Image-level labels of the training ids, from Annotations/ XML or the training masks."""
    input:
        shards("results/splits/train/{shard}.txt"),
    output:
        "results/labels/train.json",
    params:
        data=config["data"],
    log:
        "logs/image_labels.log",
    script:
        "../workflow_scripts/image_labels.py"
