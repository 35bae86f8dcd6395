# Figures for `snakemake --report report.html` (after `snakemake all`).

TRAIN_LOGS = ["train_cls", "train_aff", "train_static", "train_baseline", "train_dynamic"]


rule report_figures:
    input:
        miou="results/miou.json",
        baseline="results/miou_baseline.json",
        seeds="results/seeds.json",
        logs=expand("logs/{name}.log", name=TRAIN_LOGS),
        ids=shards("results/splits/train/{shard}.txt"),
        eval_ids=shards("results/splits/eval/{shard}.txt"),
        K0=shards("results/masks/K0/{shard}"),
        A0=shards("results/masks/A0/{shard}"),
        D0=shards("results/masks/D0/{shard}"),
        dd=shards("results/dd0/{shard}.h5"),
        pred_ssdd=shards("results/pred/dynamic/{shard}"),
        pred_base=shards("results/pred/baseline/{shard}"),
    output:
        bars=report("results/report/iou_bars.png", caption="../report/iou_bars.rst", category="Scores"),
        seeds=report("results/report/seeds.csv", caption="../report/seeds.rst", category="Seeds"),
        losses=report("results/report/losses.png", caption="../report/losses.rst", category="Training"),
        gallery=report("results/report/gallery.png", caption="../report/gallery.rst", category="Examples"),
    params:
        cfg={k: config[k] for k in ("data", "eval", "seed")},
        names=TRAIN_LOGS,
        n_train=6,
        n_eval=6,
    log:
        "logs/report_figures.log",
    script:
        "../workflow_scripts/report_figures.py"


rule report_sweep:
    input:
        "results/sweep/crf.json",
    output:
        report("results/report/crf_sweep.png", caption="../report/sweep.rst", category="Seeds"),
    log:
        "logs/report_sweep.log",
    script:
        "../workflow_scripts/report_sweep.py"
