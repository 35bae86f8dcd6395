# Inference, scoring and tables (DESIGN §3.7-3.8).


rule infer:
    input:
        model="results/models/{model}.pt",
        ids="results/splits/eval/{shard}.txt",
    output:
        directory("results/pred/{model}/{shard}"),
    params:
        cfg={k: config[k] for k in ("eval", "model", "seg", "infer", "crf", "seed", "device")},
    log:
        "logs/infer/{model}/{shard}.log",
    benchmark:
        "benchmarks/infer/{model}/{shard}.tsv"
    # The test-time CRF (single-threaded) dominates: one thread per shard lets shards run side by side.
    threads: 1
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/infer.py"


rule score:
    """mIoU of the SSDD model (miou.json) or the baseline (miou_baseline.json) on the eval split."""
    input:
        ids=shards("results/splits/eval/{shard}.txt"),
        pred=lambda w: shards(f"results/pred/{'dynamic' if w.tag == '' else w.tag.lstrip('_')}/{{shard}}"),
    output:
        "results/miou{tag}.json",
    wildcard_constraints:
        tag="|_baseline|_static",
    params:
        cfg=config,
    log:
        "logs/score/miou{tag}.log",
    script:
        "../workflow_scripts/score.py"


rule score_seeds:
    """Seed quality on the training ids (paper Fig. 6): CAM, m^K0, m^A0, m^D0."""
    input:
        ids=shards("results/splits/train/{shard}.txt"),
        cam=shards("results/cam/{shard}.h5"),
        K0=shards("results/masks/K0/{shard}"),
        A0=shards("results/masks/A0/{shard}"),
        D0=shards("results/masks/D0/{shard}"),
    output:
        "results/seeds.json",
    params:
        cfg={k: config[k] for k in ("data", "cam")},
    log:
        "logs/score_seeds.log",
    script:
        "../workflow_scripts/score_seeds.py"


rule table1:
    input:
        ssdd="results/miou.json",
        baseline="results/miou_baseline.json",
    output:
        "results/table1.md",
    log:
        "logs/table1.log",
    script:
        "../workflow_scripts/table1.py"
