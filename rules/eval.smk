# Inference, scoring and tables (DESIGN §3.7-3.8).


rule infer:
    input:
        model="results/models/{model}.pt",
        ids="results/splits/eval/{shard}.txt",
    output:
        directory("results/pred/{model}/{shard}"),
    params:
        code=CODE_VERSION["infer"],
        cfg={k: config[k] for k in ("eval", "model", "seg", "infer", "crf", "seed", "device")},
        kind=lambda w: model_kind(w.model),
    log:
        "logs/infer/{model}/{shard}.log",
    benchmark:
        "benchmarks/infer/{model}/{shard}.tsv"
    # The test-time CRF (single-threaded) dominates: with 1 thread per shard, shards run side by side;
    # with more (cores > shards), the CRF runs on that many worker processes beside the network.
    threads: SHARD_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/infer.py"


rule score:
    """mIoU on the eval split of the SSDD model (miou.json), the baseline (miou_baseline.json), the
    static model or a static-only row (miou_static.json, miou_seg_{K0,A0,D0}.json), per run."""
    input:
        ids=shards("results/splits/eval/{shard}.txt"),
        pred=lambda w: shards(f"results/pred/{scored_model(w.tag)}/{{shard}}"),
    output:
        json="results/miou{tag}.json",
        confusion="results/confusion/miou{tag}.h5",
    wildcard_constraints:
        tag=rf"(?:|_baseline|_static|_dyn0|_seg_(?:K0|A0|D0)){REP}",
    params:
        code=CODE_VERSION["score"],
        cfg={"eval": config["eval"]},
        model=lambda w: scored_model(w.tag),
    log:
        "logs/score/miou{tag}.log",
    script:
        "../workflow_scripts/score.py"


rule score_seeds:
    """Seed quality on the training ids (paper Fig. 6): CAM, m^K0, m^A0, m^D0."""
    input:
        ids=shards("results/splits/train/{shard}.txt"),
        cam=shards("results/cam/{shard}.h5") if PSA_SEEDS else [],  # no CAM row for precomputed seeds
        K0=shards("results/masks/K0/{shard}"),
        A0=shards("results/masks/A0/{shard}"),
        D0=shards("results/masks/D0/{shard}"),
    output:
        "results/seeds.json",
    params:
        code=CODE_VERSION["score_seeds"],
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


rule ablation:
    """The ablation rows on the eval split (paper Table 1, Fig. 8): the static-only seg model on
    m^K0 (PSA), m^A0 and m^D0, the refinement-off control DYN0 and SSDD's dynamic model (those of
    `ablation_rows`), mean ± std over `repeats` runs, with the published numbers for context
    (results/ablation.md + .json)."""
    input:
        **{row: expand(f"results/miou{ROW_TAGS[row]}{{rep}}.json", rep=REPS) for row in ABLATION_ROWS},
        confusion=expand("results/confusion/miou{tag}{rep}.h5", tag=[ROW_TAGS[r] for r in ABLATION_ROWS],
                         rep=REPS),
        # the dynamic stage's per-epoch diagnostics of each run (m^D2 against m^D0, issue 30)
        **{f"diag_{row}": expand(f"results/diagnostics/{dyn}{{rep}}.json", rep=REPS)
           for row, dyn in (("DYN0", "dyn0"), ("SSDD", "dynamic")) if row in ABLATION_ROWS},
    output:
        md="results/ablation.md",
        json="results/ablation.json",
    log:
        "logs/ablation.log",
    script:
        "../workflow_scripts/ablation.py"
