"""Code versions of the stages, one integer per rule that computes an artifact.

Snakemake reruns a rule when its thin script changes, not when the library code it calls does.
Each rule below passes its number as a ``code`` param, so bumping a number reruns that stage and
everything downstream of it (Snakemake's ``params`` rerun trigger). Bump a stage's number in the
commit that changes what the stage computes (not for a refactoring that keeps the artifacts
bit-identical), and say so in the commit message.

History (short): 2 = issue 17's fidelity fixes (aligned backbones, walk scale, in-loop CRF
kernels, plain CE) and issue 19's lean artifacts (crf without p^A0, dd0 on the DD grid).
3 = issue 28's feature geometry (standard atrous conversion, per-tap grids): every stage from the
classifier on.
"""

CODE_VERSION: dict[str, int] = {
    "split_ids": 1,
    "image_labels": 1,
    "train_cls": 3,
    "cam": 3,
    "aff_labels": 3,
    "train_aff": 3,
    "psa": 3,
    "import_seeds": 1,
    "crf": 3,
    "train_static": 3,
    "integrate": 3,
    "train_dynamic": 3,
    "train_seg": 3,
    "infer": 3,
    "score": 1,
    "score_seeds": 1,
}
