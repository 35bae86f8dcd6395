# SSDD (Shimoda & Yanai, ICCV 2019) as a Snakemake workflow. See README.md and DESIGN.md.
configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/psa.smk"
include: "rules/crf.smk"
include: "rules/static.smk"
include: "rules/dynamic.smk"
include: "rules/eval.smk"
include: "rules/sweep.smk"
include: "rules/report.smk"


import time as _time

from ssdd_core.report import run_summary

_RUN_START = _time.time()


onsuccess:
    print(run_summary("results", _RUN_START))


rule all:
    input:
        "results/miou.json",
        "results/miou_baseline.json",
        "results/table1.md",
        "results/seeds.json",
        "results/report/iou_bars.png",


localrules:
    all,
    split_ids,
    image_labels,
    table1,
    sweep_table,
    report_figures,
    report_sweep,
