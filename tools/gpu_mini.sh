#!/usr/bin/env bash
# voc2012_mini end to end on one GPU at a paper-like schedule (config/gpu_mini.yaml): the main job
# and the ablation rows, then the per-rule times (benchmark files) and results/ablation.md.
#   bash tools/gpu_mini.sh [RUN_DIR]          (default: runs/gpu_mini; needs ../shared beside the clone)
#
# Time estimate, one H100/H200-class GPU and 16 CPU cores (not measured: no GPU has been lent):
# the models are small (EfficientNet-Lite0 + 512-wide heads on 40x40 maps, ~60 GFLOP forward per
# 320-px crop for the dynamic model), so 30 dynamic epochs of 1,037 crops are ~6 PFLOP, well under
# a minute of GPU time; the CPU work bounds the run: JPEG decoding and augmentation (~8 ms per
# crop, 8 loader workers), the in-loop CRF (~3 ms per 80x80 crop, 8 workers), the full-size CRFs of
# aff_labels / crf (~0.3 s per image, 8 shards side by side) and the test-time CRF at half size
# (445 val images x 4 models). Summed: about 1 min seeds (train_cls, cam, train_aff, psa), 1.5 min
# CRFs, 1 min static + integration, 1.5 min dynamic, 1.5 min for the three static-only rows, 1 min
# inference and scores, plus ~5 s of Python start-up per job: about 7-8 minutes.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
RUN="${1:-$REPO/runs/gpu_mini}"
DATA="$(cd "$REPO/../shared/data/voc2012_mini" && pwd)"
mkdir -p "$RUN"
t0=$(date +%s)
# 4 GPU jobs at a time on one large GPU (the default profile allows 1), 8 threads (loader
# workers) per training rule.
python -m snakemake -s "$REPO/Snakefile" --directory "$RUN" --cores 16 --resources gpu=4 \
    --configfile "$REPO/config.yaml" "$REPO/config/voc2012_mini.yaml" "$REPO/config/gpu_mini.yaml" \
    --config data="{'root': '$DATA'}" eval="{'root': '$DATA'}" \
    --set-threads train_cls=8 train_aff=8 train_static=8 train_dynamic=8 train_seg=8 cam=2 psa=2 integrate=2 \
    all ablation
echo "wall time: $(( $(date +%s) - t0 )) s"
python - "$RUN" <<'PY'
import sys
from pathlib import Path
bench = Path(sys.argv[1]) / "benchmarks"
times = {}
for f in sorted(bench.rglob("*.tsv")):
    rule = f.relative_to(bench).parts[0].removesuffix(".tsv")
    times[rule] = times.get(rule, 0.0) + float(f.read_text().splitlines()[1].split("\t")[0])
print("rule times (s, shards summed):", ", ".join(f"{k} {v:.0f}" for k, v in sorted(times.items(), key=lambda kv: -kv[1])))
PY
cat "$RUN/results/ablation.md"
