"""One function per pipeline stage (DESIGN §2), each taking plain paths and config dicts, so it
runs from Snakemake's thin scripts, a notebook or a test alike; none imports snakemake.

* :mod:`.data`: ``split_ids``, ``image_labels`` (§3.1)
* :mod:`.psa`: ``train_cls``, ``cam``, ``aff_labels``, ``train_aff``, ``psa`` (§3.2), ``import_seeds``
* :mod:`.refine`: ``crf`` (§3.3), ``train_static``, ``integrate`` (§3.5), ``train_dynamic`` (§3.6),
  ``train_seg`` (§3.7)
* :mod:`.evaluate`: ``infer`` (§3.7), ``score``, ``score_seeds`` (§3.8)

:mod:`.context` holds what a rule's run shares (config, device, data root, labels).
"""
from .data import image_labels, split_ids
from .evaluate import infer, score, score_seeds
from .psa import aff_labels, cam, import_seeds, psa, train_aff, train_cls
from .refine import crf, inloop_crf, integrate, train_dynamic, train_seg, train_static

__all__ = ["split_ids", "image_labels", "train_cls", "cam", "aff_labels", "train_aff", "psa", "import_seeds", "crf",
           "train_static", "integrate", "train_seg", "inloop_crf", "train_dynamic", "infer", "score", "score_seeds"]
