# Dense CRF of the seeds (DESIGN §3.3): p^K0 → m^A0.


rule crf:
    input:
        probs="results/psa{rep}/{shard}.h5",
    output:
        masks=directory("results/masks/A0{rep}/{shard}"),
    params:
        code=CODE_VERSION["crf"],
        cfg={k: config[k] for k in ("data", "crf")},
    log:
        "logs/crf{rep}/{shard}.log",
    benchmark:
        "benchmarks/crf{rep}/{shard}.tsv"
    threads: SHARD_THREADS
    script:
        "../workflow_scripts/crf.py"
