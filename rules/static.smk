# Static region refinement (DESIGN §3.5): SSDD(m^K0, m^A0) → m^D0.


rule train_static:
    input:
        unpack(classifier_input),
        labels="results/labels/train.json",
        ids=shards("results/splits/train/{shard}.txt"),
        k0=seed_masks("K0"),
        a0=seed_masks("A0"),
    output:
        "results/models/static{rep}.pt",
    params:
        code=CODE_VERSION["train_static"],
        cfg=lambda w: with_rep_seed(
            {k: config[k] for k in ("data", "model", "seg", "static", "seed", "device", "amp", "nan_policy")}, run_of(w)
        ),
    log:
        "logs/train_static{rep}.log",
    benchmark:
        "benchmarks/train_static{rep}.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/train_static.py"


rule integrate:
    input:
        model="results/models/static{rep}.pt",
        labels="results/labels/train.json",
        ids="results/splits/train/{shard}.txt",
        k0=seed_mask("K0"),
        a0=seed_mask("A0"),
    output:
        masks=directory("results/masks/D0{rep}/{shard}"),
        dd="results/dd0{rep}/{shard}.h5",
    params:
        code=CODE_VERSION["integrate"],
        cfg=lambda w: with_rep_seed({k: config[k] for k in ("data", "model", "seg", "static", "seed", "device")}, run_of(w)),
    log:
        "logs/integrate{rep}/{shard}.log",
    benchmark:
        "benchmarks/integrate{rep}/{shard}.tsv"
    threads: SHARD_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/integrate.py"
