# CRF-weight sweep (paper Fig. 6): for each bilateral weight w in config sweep.crf_bi_w, its own
# CRF → static training → integration chain on the same PSA artifacts, then a table of A0 / D0.


SW = "results/sweep/crf_bi{w}"
SWE = "results/sweep/crf_bi{{w}}"  # the same inside expand()


wildcard_constraints:
    w=r"[0-9]+(\.[0-9]+)?",


use rule crf as sweep_crf with:
    input:
        probs="results/psa/{shard}.h5",  # run 0's seeds (crf's own input has the {rep} of repeats_from: seeds)
    output:
        masks=directory(f"{SW}/masks/A0/{{shard}}"),
    params:
        code=CODE_VERSION["crf"],
        cfg=lambda w: sweep_cfg(w, ("data", "crf")),
    log:
        "logs/sweep/crf_bi{w}/crf/{shard}.log",
    benchmark:
        "benchmarks/sweep/crf_bi{w}/crf/{shard}.tsv"


use rule train_static as sweep_train_static with:
    input:
        unpack(classifier_input),
        labels="results/labels/train.json",
        ids=shards("results/splits/train/{shard}.txt"),
        k0=shards("results/masks/K0/{shard}"),
        a0=shards(f"{SWE}/masks/A0/{{shard}}"),
    output:
        f"{SW}/models/static.pt",
    log:
        "logs/sweep/crf_bi{w}/train_static.log",
    benchmark:
        "benchmarks/sweep/crf_bi{w}/train_static.tsv"


use rule integrate as sweep_integrate with:
    input:
        model=f"{SW}/models/static.pt",
        labels="results/labels/train.json",
        ids="results/splits/train/{shard}.txt",
        k0="results/masks/K0/{shard}",
        a0=f"{SW}/masks/A0/{{shard}}",
    output:
        masks=directory(f"{SW}/masks/D0/{{shard}}"),
        dd=f"{SW}/dd0/{{shard}}.h5",
    log:
        "logs/sweep/crf_bi{w}/integrate/{shard}.log",
    benchmark:
        "benchmarks/sweep/crf_bi{w}/integrate/{shard}.tsv"


use rule score_seeds as sweep_score_seeds with:
    input:
        ids=shards("results/splits/train/{shard}.txt"),
        cam=shards("results/cam/{shard}.h5"),
        K0=shards("results/masks/K0/{shard}"),
        A0=shards(f"{SWE}/masks/A0/{{shard}}"),
        D0=shards(f"{SWE}/masks/D0/{{shard}}"),
    output:
        f"{SW}/seeds.json",
    log:
        "logs/sweep/crf_bi{w}/score_seeds.log",


rule sweep_table:
    """results/sweep/crf.json: K0, A0 and D0 train mIoU per CRF bilateral weight."""
    input:
        expand(f"{SW}/seeds.json", w=config.get("sweep", {}).get("crf_bi_w", [])),
    output:
        "results/sweep/crf.json",
    params:
        weights=config.get("sweep", {}).get("crf_bi_w", []),
    log:
        "logs/sweep/table.log",
    script:
        "../workflow_scripts/sweep_table.py"
