# PSA seeds (DESIGN §3.2): classifier → CAM → affinity labels → AffinityNet → random walk (m^K0).
# `{rep}` is "" except for the runs r > 0 of `repeats_from: seeds` ("-r<r>", seed + r; issue 30).


rule train_cls:
    input:
        labels="results/labels/train.json",
    output:
        "results/models/cls{rep}.pt",
    params:
        code=CODE_VERSION["train_cls"],
        cfg=lambda w: with_rep_seed(
            {k: config[k] for k in ("data", "model", "cls", "seed", "device", "amp", "nan_policy")}, w.rep
        ),
    log:
        "logs/train_cls{rep}.log",
    benchmark:
        "benchmarks/train_cls{rep}.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/train_cls.py"


rule cam:
    input:
        model="results/models/cls{rep}.pt",
        ids="results/splits/train/{shard}.txt",
        labels="results/labels/train.json",
    output:
        "results/cam{rep}/{shard}.h5",
    params:
        code=CODE_VERSION["cam"],
        cfg={k: config[k] for k in ("data", "model", "cam", "seed", "device")},
    log:
        "logs/cam{rep}/{shard}.log",
    benchmark:
        "benchmarks/cam{rep}/{shard}.tsv"
    threads: SHARD_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/cam.py"


rule aff_labels:
    input:
        cam="results/cam{rep}/{shard}.h5",
    output:
        "results/aff_labels{rep}/{shard}.h5",
    params:
        code=CODE_VERSION["aff_labels"],
        cfg={k: config[k] for k in ("data", "aff")},
    log:
        "logs/aff_labels{rep}/{shard}.log",
    benchmark:
        "benchmarks/aff_labels{rep}/{shard}.tsv"
    threads: SHARD_THREADS
    script:
        "../workflow_scripts/aff_labels.py"


rule train_aff:
    input:
        labels="results/labels/train.json",
        aff=shards("results/aff_labels{{rep}}/{shard}.h5"),
    output:
        "results/models/aff{rep}.pt",
    params:
        code=CODE_VERSION["train_aff"],
        cfg=lambda w: with_rep_seed(
            {k: config[k] for k in ("data", "model", "aff", "seed", "device", "amp", "nan_policy")}, w.rep
        ),
    log:
        "logs/train_aff{rep}.log",
    benchmark:
        "benchmarks/train_aff{rep}.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/train_aff.py"


if PSA_SEEDS:

    rule psa:
        input:
            model="results/models/aff{rep}.pt",
            cam="results/cam{rep}/{shard}.h5",
        output:
            probs="results/psa{rep}/{shard}.h5",
            masks=directory("results/masks/K0{rep}/{shard}"),
        params:
            code=CODE_VERSION["psa"],
            cfg={k: config[k] for k in ("data", "model", "aff", "psa", "seed", "device")},
        log:
            "logs/psa{rep}/{shard}.log",
        benchmark:
            "benchmarks/psa{rep}/{shard}.tsv"
        threads: SHARD_THREADS
        resources:
            gpu=DEVICE_GPU,
        script:
            "../workflow_scripts/psa.py"

else:

    rule import_seeds:
        """Another method's seeds (config seeds.dir) → p^K0 and m^K0, validated (issue 20)."""
        input:
            ids="results/splits/train/{shard}.txt",
            labels="results/labels/train.json",
            seeds=config["seeds"]["dir"],
        output:
            probs="results/psa/{shard}.h5",
            masks=directory("results/masks/K0/{shard}"),
        params:
            code=CODE_VERSION["import_seeds"],
            cfg={k: config[k] for k in ("data", "seeds")},
        log:
            "logs/import_seeds/{shard}.log",
        benchmark:
            "benchmarks/import_seeds/{shard}.tsv"
        threads: 1
        script:
            "../workflow_scripts/import_seeds.py"
