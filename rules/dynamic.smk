# Dynamic region refinement (DESIGN §3.6) and the PSA-style baseline (DESIGN §3.7).


rule train_dynamic:
    input:
        cls="results/models/cls.pt",
        labels="results/labels/train.json",
        ids=shards("results/splits/train/{shard}.txt"),
        d0=shards("results/masks/D0/{shard}"),
    output:
        "results/models/dynamic.pt",
    params:
        cfg={k: config[k] for k in ("data", "model", "seg", "dynamic", "crf", "seed", "device", "amp", "nan_policy")},
    log:
        "logs/train_dynamic.log",
    benchmark:
        "benchmarks/train_dynamic.tsv"
    threads: 2
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/train_dynamic.py"


rule train_baseline:
    input:
        cls="results/models/cls.pt",
        labels="results/labels/train.json",
        ids=shards("results/splits/train/{shard}.txt"),
        masks=shards(f"results/masks/{config['baseline']['mask']}/{{shard}}"),
    output:
        "results/models/baseline.pt",
    params:
        cfg={k: config[k] for k in ("data", "model", "seg", "baseline", "seed", "device", "amp", "nan_policy")},
    log:
        "logs/train_baseline.log",
    benchmark:
        "benchmarks/train_baseline.tsv"
    threads: 2
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/train_baseline.py"
