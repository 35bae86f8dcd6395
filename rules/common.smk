# Helpers shared by every rule file: config validation, shard names, input functions.
from snakemake.utils import validate

from ssdd_core.config import coerce_cli_strings

# `--config crf='{"bi_w": 5}'` arrives as strings: convert to the schema's types, then validate.
coerce_cli_strings(config, workflow.source_path("../config/config.schema.yaml"))
validate(config, schema="../config/config.schema.yaml")

SHARDS = [f"{i:03d}" for i in range(config["shards"])]
DEVICE_GPU = 1 if config["device"] in ("auto", "cuda") else 0


def shards(pattern, **kw):
    """Expand a per-shard path pattern over all shards."""
    return expand(pattern, shard=SHARDS, **kw)


wildcard_constraints:
    shard=r"\d{3}",
    set="train|eval",
    model="dynamic|baseline|static",


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
