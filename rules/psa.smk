# PSA seeds (DESIGN §3.2): classifier → CAM → affinity labels → AffinityNet → random walk (m^K0).


rule train_cls:
    input:
        labels="results/labels/train.json",
    output:
        "results/models/cls.pt",
    params:
        code=CODE_VERSION["train_cls"],
        cfg={k: config[k] for k in ("data", "model", "cls", "seed", "device", "amp", "nan_policy")},
    log:
        "logs/train_cls.log",
    benchmark:
        "benchmarks/train_cls.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/train_cls.py"


rule cam:
    input:
        model="results/models/cls.pt",
        ids="results/splits/train/{shard}.txt",
        labels="results/labels/train.json",
    output:
        "results/cam/{shard}.h5",
    params:
        code=CODE_VERSION["cam"],
        cfg={k: config[k] for k in ("data", "model", "cam", "seed", "device")},
    log:
        "logs/cam/{shard}.log",
    benchmark:
        "benchmarks/cam/{shard}.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/cam.py"


rule aff_labels:
    input:
        cam="results/cam/{shard}.h5",
    output:
        "results/aff_labels/{shard}.h5",
    params:
        code=CODE_VERSION["aff_labels"],
        cfg={k: config[k] for k in ("data", "aff")},
    log:
        "logs/aff_labels/{shard}.log",
    benchmark:
        "benchmarks/aff_labels/{shard}.tsv"
    threads: 1
    script:
        "../workflow_scripts/aff_labels.py"


rule train_aff:
    input:
        labels="results/labels/train.json",
        aff=shards("results/aff_labels/{shard}.h5"),
    output:
        "results/models/aff.pt",
    params:
        code=CODE_VERSION["train_aff"],
        cfg={k: config[k] for k in ("data", "model", "aff", "seed", "device", "amp", "nan_policy")},
    log:
        "logs/train_aff.log",
    benchmark:
        "benchmarks/train_aff.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/train_aff.py"


if PSA_SEEDS:

    rule psa:
        input:
            model="results/models/aff.pt",
            cam="results/cam/{shard}.h5",
        output:
            probs="results/psa/{shard}.h5",
            masks=directory("results/masks/K0/{shard}"),
        params:
            code=CODE_VERSION["psa"],
            cfg={k: config[k] for k in ("data", "model", "aff", "psa", "seed", "device")},
        log:
            "logs/psa/{shard}.log",
        benchmark:
            "benchmarks/psa/{shard}.tsv"
        threads: TORCH_THREADS
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
