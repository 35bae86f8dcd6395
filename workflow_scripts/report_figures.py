# Thin Snakemake script: see ssdd_core.report
from ssdd_core import report
from ssdd_core.runlog import logged

with logged(snakemake.log[0]):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    report.iou_bars(i.miou, i.baseline, o.bars)
    report.seeds_table(i.seeds, o.seeds)
    report.published_csv(o.published)
    report.loss_curves(dict(zip(p.names, i.logs)), o.losses)
    report.dynamic_epochs(i.dynamic, o.dynamic)
    report.gallery_from_artifacts(p.cfg, list(i.ids), list(i.K0), list(i.A0), list(i.D0), list(i.dd),
                                  list(i.eval_ids), list(i.pred_base), list(i.pred_ssdd), p.n_train, p.n_eval,
                                  o.gallery)
