# Dynamic region refinement (DESIGN §3.6) and the static-only seg rows (DESIGN §3.7): the
# PSA-style baseline (m^K0), and the same model on m^A0 and m^D0 (paper Fig. 8).
# `{rep}` is the run suffix of config `repeats` ("" or "-r<r>", rules/common.smk).


rule train_dynamic:
    """SSDD's dynamic model (`dynamic`), or with `dyn0` its control row DYN0: the same rule and
    settings with the refinement off (m^D0 in every seg loss; issue 30)."""
    input:
        unpack(classifier_input),
        unpack(static_input("dynamic")),
        labels="results/labels/train.json",
        ids=shards("results/splits/train/{shard}.txt"),
        d0=d0_shards,
    output:
        model="results/models/{dyn}{rep}.pt",
        diag="results/diagnostics/{dyn}{rep}.json",
    wildcard_constraints:
        dyn="dynamic|dyn0",
    params:
        code=CODE_VERSION["train_dynamic"],
        cfg=lambda w: with_rep_seed(
            {k: config[k] for k in ("data", "model", "seg", "dynamic", "crf", "device", "amp", "nan_policy")},
            w.rep,
        ),
        refinement=lambda w: w.dyn == "dynamic",
    log:
        "logs/train_{dyn}{rep}.log",
    benchmark:
        "benchmarks/train_{dyn}{rep}.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/train_dynamic.py"


rule train_seg:
    """The seg model trained on one seed mask with L_seg alone (settings: config `baseline`)."""
    input:
        unpack(classifier_input),
        unpack(static_input("baseline")),
        labels="results/labels/train.json",
        ids=shards("results/splits/train/{shard}.txt"),
        masks=mask_shards,
    output:
        "results/models/seg_{mask}{rep}.pt",
    params:
        code=CODE_VERSION["train_seg"],
        cfg=lambda w: with_rep_seed(
            {k: config[k] for k in ("data", "model", "seg", "baseline", "device", "amp", "nan_policy")}, w.rep
        ),
    log:
        "logs/train_seg/{mask}{rep}.log",
    benchmark:
        "benchmarks/train_seg/{mask}{rep}.tsv"
    threads: TORCH_THREADS
    resources:
        gpu=DEVICE_GPU,
    script:
        "../workflow_scripts/train_seg.py"
