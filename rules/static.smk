# Static region refinement (DESIGN §3.5): SSDD(m^K0, m^A0) → m^D0.


rule train_static:
    input:
        unpack(classifier_input),
        labels="results/labels/train.json",
        ids=shards("results/splits/train/{shard}.txt"),
        k0=shards("results/masks/K0/{shard}"),
        a0=shards("results/masks/A0/{shard}"),
    output:
        "results/models/static.pt",
    params:
        code=CODE_VERSION["train_static"],
        cfg={k: config[k] for k in ("data", "model", "seg", "static", "seed", "device", "amp", "nan_policy")},
    log:
        "logs/train_static.log",
    benchmark:
        "benchmarks/train_static.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/train_static.py"


rule integrate:
    input:
        model="results/models/static.pt",
        labels="results/labels/train.json",
        ids="results/splits/train/{shard}.txt",
        k0="results/masks/K0/{shard}",
        a0="results/masks/A0/{shard}",
    output:
        masks=directory("results/masks/D0/{shard}"),
        dd="results/dd0/{shard}.h5",
    params:
        code=CODE_VERSION["integrate"],
        cfg={k: config[k] for k in ("data", "model", "seg", "static", "seed", "device")},
    log:
        "logs/integrate/{shard}.log",
    benchmark:
        "benchmarks/integrate/{shard}.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/integrate.py"
