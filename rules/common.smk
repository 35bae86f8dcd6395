# Helpers shared by all rule files (config validation, shard names, input functions).
import sys

from snakemake.utils import validate

from ssdd_core.config import (
    REP_PATTERN,
    check_walk_scale,
    coerce_cli_strings,
    cuda_visible,
    rep_suffix,
    schedule_differences,
    split_rep,
)
from ssdd_core.versions import CODE_VERSION

# `--config crf='{"bi_w": 5}'` arrives as strings: convert to the schema's types, then validate.
coerce_cli_strings(config, workflow.source_path("../config/config.schema.yaml"))
validate(config, schema="../config/config.schema.yaml")
# The random walk must run at the scale AffinityNet was trained at (issue 17).
_walk_problem = config["psa"]["walk_long_side"] is not None and check_walk_scale(
    config["psa"]["walk_long_side"], config["aff"]["crop"], config["aff"]["scale_range"], " (psa.walk_long_side)")
if _walk_problem:
    raise ValueError(f"config: {_walk_problem}")
# The ablation compares the static-only rows with the dynamic model: same schedule (issue 18).
_unfair = schedule_differences(config)
if _unfair:
    print("WARNING: config 'baseline' and 'dynamic' train differently, so the ablation rows are not a like-for-like "
          "comparison with SSDD: " + "; ".join(_unfair), file=sys.stderr)

SHARDS = [f"{i:03d}" for i in range(config["shards"])]


def _torch_threads() -> int:
    """Threads of the training jobs (issue 29; the sharded rules split them: SHARD_THREADS). Config `threads`
    if set, else the cores Snakemake is given (`--cores N`, which also caps every job), else 2
    (an executor such as Slurm run without --cores: set `threads` or --set-threads there)."""
    if config.get("threads"):
        return int(config["threads"])
    try:
        cores = workflow.cores
    except Exception:  # WorkflowError: no --cores given
        return 2
    return int(cores) if cores and cores < 4096 else 2


TORCH_THREADS = _torch_threads()


def _shard_threads() -> int:
    """Threads of each job of a sharded per-image rule (cam, aff_labels, psa, crf, integrate,
    infer; issue 29): config `shard_threads` if set, else the torch threads split over the shards
    (at least 1), so that the shards run side by side on every core given: 2 cores and 4 shards
    give 1 thread each, two jobs at a time; 16 cores and 4 shards 4 each, all four at once. The
    torch rules use them as torch threads, the CRF rules (crf, aff_labels, infer's CRF) as worker
    processes. On 2 cores two 1-thread jobs beat one 2-thread job by 1.1-1.3x (cam, psa, integrate)."""
    if config.get("shard_threads"):
        return int(config["shard_threads"])
    return max(1, TORCH_THREADS // int(config["shards"]))


SHARD_THREADS = _shard_threads()

# Seed source (issue 20): the PSA chain, or another method's seeds imported by import_seeds.
PSA_SEEDS = config["seeds"]["source"] == "psa"
if not PSA_SEEDS and not config["seeds"]["dir"]:
    raise ValueError("config: seeds.source is 'precomputed' but seeds.dir is not set (the folder of the seeds)")


# the ablation's rows (issue 29: fewer rows, fewer trainings per repeat); K0 is the reference
ABLATION_ROWS = [r for r in ("K0", "A0", "D0", "DYN0", "SSDD") if r in config["ablation_rows"]]
if not {"K0", "SSDD"} <= set(ABLATION_ROWS):
    raise ValueError(f"config: ablation_rows {config['ablation_rows']} must include K0 (the reference) and SSDD")
# a row's score file stem: results/miou<tag><rep>.json, results/confusion/miou<tag><rep>.h5
ROW_TAGS = {"K0": "_seg_K0", "A0": "_seg_A0", "D0": "_seg_D0", "DYN0": "_dyn0", "SSDD": ""}


if config["repeats_from"] == "seeds" and not PSA_SEEDS:
    raise ValueError("config: repeats_from 'seeds' reruns the PSA seed chain, but seeds.source is 'precomputed' "
                     "(imported seeds are fixed); use repeats_from 'static' or 'seg'")


def seed_rep(rep: str) -> str:
    """The run suffix of the seed chain (classifier → CAM → AffinityNet → walk → m^K0, CRF → m^A0)
    that run ``rep`` uses: its own with `repeats_from: seeds`, run 0's ("") otherwise (issue 30)."""
    return rep if config["repeats_from"] == "seeds" else ""


def static_rep(rep: str) -> str:
    """The run suffix of the static stage (static.pt, m^D0) that seg run ``rep`` uses: its own
    with `repeats_from: static` or `seeds`, run 0's ("") with `seg`."""
    return rep if config["repeats_from"] in ("static", "seeds") else ""


def classifier_input(wildcards=None) -> dict:
    """The PSA classifier that initialises the seg models' encoder (the run's own with
    `repeats_from: seeds`); none (ImageNet weights) with precomputed seeds, whose rule graph has
    no classifier."""
    return {"cls": f"results/models/cls{seed_rep(run_of(wildcards))}.pt"} if PSA_SEEDS else {}


def seed_masks(mask: str):
    """Input function: the shard folders of seed mask ``mask`` (K0 or A0) of the job's run."""
    return lambda w: shards(f"results/masks/{mask}{seed_rep(run_of(w))}/{{shard}}")


def seed_mask(mask: str):
    """Input function: the folder of seed mask ``mask`` (K0 or A0) for the job's run and shard."""
    return lambda w: f"results/masks/{mask}{seed_rep(run_of(w))}/{w.shard}"


def static_input(block: str):
    """Input function: the static stage's model for a training rule whose config block ``block``
    starts from it (``init: static``), none otherwise."""
    return lambda w: ({"static": f"results/models/static{static_rep(w.rep)}.pt"} if config[block]["init"] == "static"
                      else {})


def d0_shards(w) -> list:
    """Input function: the m^D0 shard folders of seg run ``w.rep`` (:func:`static_rep`)."""
    return shards(f"results/masks/D0{static_rep(w.rep)}/{{shard}}")


def mask_shards(w) -> list:
    """Input function: the training masks of static-only row ``w.mask`` for run ``w.rep``."""
    return d0_shards(w) if w.mask == "D0" else seed_masks(w.mask)(w)


# Rules that run on the device claim `gpu` (the default profile allows gpu=1, so they take
# turns on one GPU). On a CPU-only machine they claim none, so 1-thread shards (infer) run
# side by side; 2-thread training rules still take the 2 cores one at a time.
DEVICE_GPU = 1 if config["device"] == "cuda" or (config["device"] == "auto" and cuda_visible()) else 0


def shards(pattern, **kw):
    """Expand a per-shard path pattern over all shards."""
    return expand(pattern, shard=SHARDS, **kw)


# Seg-training runs (config `repeats`): "" for run 0, "-r<r>" for run r (ssdd_core.config).
REP = REP_PATTERN
REPS = [rep_suffix(r) for r in range(config["repeats"])]


def run_of(w) -> str:
    """The run suffix of a job's wildcards ("" for rules without `{rep}`, such as the sweep's
    reuse of train_static / integrate)."""
    return getattr(w, "rep", "") if w is not None else ""


def with_rep_seed(cfg: dict, rep: str) -> dict:
    """A rule's config blocks with the run's seed (config seed + run index)."""
    return {**cfg, "seed": config["seed"] + split_rep(rep)[1]}


# The seg models inferred and scored: the SSDD dynamic model, the static stage's model and the
# static-only rows (L_seg alone on m^K0 / m^A0 / m^D0; paper Fig. 8), each with its run suffix.
SEG_KINDS = r"dynamic|dyn0|static|seg_(?:K0|A0|D0)"


def model_kind(model: str) -> str:
    """``stages.infer``'s model kind of a model name: dynamic (DYN0 included), static or seg."""
    base = split_rep(model)[0]
    return "seg" if base.startswith("seg_") else "dynamic" if base == "dyn0" else base


wildcard_constraints:
    shard=r"\d{3}",
    set="train|eval",
    model=rf"(?:{SEG_KINDS}){REP}",
    mask="K0|A0|D0",
    rep=REP,


def scored_model(tag: str) -> str:
    """The model a score file is of: miou.json is the SSDD (dynamic) model, miou_baseline.json
    the static-only row on config `baseline.mask`, miou_<model>.json that model; a run suffix
    "-r<r>" goes with it (miou-r1.json = dynamic-r1)."""
    name, r = split_rep(tag)
    base = {"": "dynamic", "_baseline": f"seg_{config['baseline']['mask']}"}.get(name, name.lstrip("_"))
    return base + rep_suffix(r)


def sweep_cfg(w, keys):
    """The config blocks ``keys`` with the CRF bilateral weight of sweep point ``w.w``."""
    c = {k: config[k] for k in keys}
    c["crf"] = {**config["crf"], "bi_w": float(w.w)}
    return c
