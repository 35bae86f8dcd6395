# The id lists and image-level labels every stage reads.


rule split_ids:
    """Split the training (train) or evaluation (eval) id list into shards."""
    output:
        shards("results/splits/{{set}}/{shard}.txt"),
    params:
        code=CODE_VERSION["split_ids"],
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
        code=CODE_VERSION["image_labels"],
        data=config["data"],
    log:
        "logs/image_labels.log",
    script:
        "../workflow_scripts/image_labels.py"
