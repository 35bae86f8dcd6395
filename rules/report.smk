# Figures for `snakemake --report report.html` (after `snakemake all`).

TRAIN_LOGS = {**({"train_cls": "logs/train_cls.log", "train_aff": "logs/train_aff.log"} if PSA_SEEDS else {}),
              "train_static": "logs/train_static.log",
              "baseline": f"logs/train_seg/{config['baseline']['mask']}.log",
              "train_dynamic": "logs/train_dynamic.log"}


rule report_figures:
    input:
        miou="results/miou.json",
        baseline="results/miou_baseline.json",
        seeds="results/seeds.json",
        logs=list(TRAIN_LOGS.values()),
        ids=shards("results/splits/train/{shard}.txt"),
        eval_ids=shards("results/splits/eval/{shard}.txt"),
        K0=shards("results/masks/K0/{shard}"),
        A0=shards("results/masks/A0/{shard}"),
        D0=shards("results/masks/D0/{shard}"),
        dd=shards("results/dd0/{shard}.h5"),
        pred_ssdd=shards("results/pred/dynamic/{shard}"),
        pred_base=shards(f"results/pred/seg_{config['baseline']['mask']}/{{shard}}"),
        dynamic="results/diagnostics/dynamic.json",
    output:
        bars=report("results/report/iou_bars.png", caption="../report/iou_bars.rst", category="Scores"),
        seeds=report("results/report/seeds.csv", caption="../report/seeds.rst", category="Seeds"),
        published=report("results/report/published.csv", caption="../report/published.rst", category="Scores"),
        losses=report("results/report/losses.png", caption="../report/losses.rst", category="Training"),
        gallery=report("results/report/gallery.png", caption="../report/gallery.rst", category="Examples"),
        dynamic=report("results/report/dynamic_epochs.png", caption="../report/dynamic_epochs.rst",
                       category="Training"),
    params:
        cfg={k: config[k] for k in ("data", "eval", "seed")},
        names=list(TRAIN_LOGS),
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
