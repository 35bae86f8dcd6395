# Thin Snakemake script: see ssdd_core.report.ablation_table
from ssdd_core import report
from ssdd_core.provenance import provenance
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    i = snakemake.input
    chosen = snakemake.config["ablation_rows"]
    rows = {r: list(getattr(i, r)) for r in ("K0", "A0", "D0", "DYN0", "SSDD") if r in chosen}
    report.ablation_table(rows,
                          snakemake.output.md, snakemake.output.json, {"provenance": provenance(snakemake.config)},
                          confusions={k: [report.confusion_path(p) for p in v] for k, v in rows.items()},
                          diagnostics={r: list(getattr(i, f"diag_{r}")) for r in ("DYN0", "SSDD") if r in chosen},
                          repeats_cover={"seg": "the seg training (the seeds, the CRF, the static stage and m^D0 are "
                                                "shared)",
                                         "static": "the static stage, m^D0 and the seg training (the seeds and the "
                                                   "CRF are shared)",
                                         "seeds": "the whole seed chain (classifier, CAM, AffinityNet, walk, CRF), "
                                                  "the static stage, m^D0 and the seg training"
                                         }[snakemake.config["repeats_from"]])
