"""Config helpers that do not depend on Snakemake."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import yaml


def _coerce(value: str, types):
    if isinstance(types, str):
        types = [types]
    low = value.strip().lower()
    if "boolean" in types and low in ("true", "false"):
        return low == "true"
    if "integer" in types:
        try:
            return int(value)
        except ValueError:
            pass
    if "number" in types:
        try:
            return float(value)
        except ValueError:
            pass
    return value


def coerce_cli_strings(config, schema: dict | str | Path):
    """Turn strings into the scalar types the schema asks for, in place.

    ``snakemake --config crf='{"bi_w": 5}'`` parses nested values with YAML's BaseLoader,
    which keeps every scalar a string ('5'). Only values whose schema type is number,
    integer, boolean or null (and not string) are converted; anything that does not parse
    stays a string, so validation still reports it with the key's name.
    """
    if not isinstance(schema, dict):
        schema = yaml.safe_load(Path(schema).read_text())

    def walk(node, sch):
        if not isinstance(sch, dict):
            return node
        if isinstance(node, dict):
            props = sch.get("properties", {})
            for k in list(node):
                if k in props:
                    node[k] = walk(node[k], props[k])
            return node
        if isinstance(node, list) and isinstance(sch.get("items"), dict):
            return [walk(v, sch["items"]) for v in node]
        types = sch.get("type")
        tl = types if isinstance(types, list) else [types]
        if not isinstance(node, str) or not types:
            return node
        # "" means null only where a string is not allowed
        nulls = ("null", "none", "~") if "string" in tl else ("null", "none", "~", "")
        if "null" in tl and node.strip().lower() in nulls:
            return None
        return node if "string" in tl else _coerce(node, types)

    return walk(config, schema)


def walk_scale_range(crop: int, scale_range: Sequence[float]) -> tuple[float, float]:
    """Long sides (px) of the images AffinityNet trains on: ``crop × scale_range``
    (:class:`~ssdd_core.datasets.ClsDataset` rescales each image's long side to that, then crops)."""
    return crop * float(scale_range[0]), crop * float(scale_range[1])


WALK_SCALE_TOLERANCE = 1.25


def check_walk_scale(long_side: int, crop: int, scale_range: Sequence[float], what: str = "") -> str | None:
    """Whether a random-walk scale is near AffinityNet's training scale (issue 17).

    Args:
        long_side: the walk's long side in px (``psa.walk_long_side``, or an image's own long
            side when that is None).
        crop, scale_range: ``aff.crop`` and ``aff.scale_range``.
        what: where ``long_side`` comes from, for the message.
    Returns:
        None when ``long_side`` lies within the training range widened by
        :data:`WALK_SCALE_TOLERANCE` (×/÷ 1.25), else a message naming the keys.
    """
    lo, hi = walk_scale_range(crop, scale_range)
    if lo / WALK_SCALE_TOLERANCE <= long_side <= hi * WALK_SCALE_TOLERANCE:
        return None
    return (f"the random walk runs at a long side of {long_side} px{what}, but AffinityNet was trained on "
            f"long sides of {lo:.0f}-{hi:.0f} px (aff.crop x aff.scale_range): set psa.walk_long_side "
            f"inside that range (or train AffinityNet at the walk's scale)")


# the settings that make the static-only rows and the dynamic model a like-for-like comparison
SCHEDULE_KEYS = ("init", "epochs", "batch", "lr", "weight_decay", "head_lr_mult", "crop", "resize_range", "max_steps")


def schedule_differences(cfg: dict) -> list[str]:
    """Where the ``baseline`` block (the static-only rows K0 / A0 / D0) and the ``dynamic`` block
    (the SSDD model) train differently (issue 18: the ablation compares like with like).

    Returns:
        one "key: baseline X, dynamic Y" string per :data:`SCHEDULE_KEYS` entry that differs
        (an absent key counts as None); empty when the comparison is fair.
    """
    b, d = cfg["baseline"], cfg["dynamic"]
    return [f"{k}: baseline {b.get(k)!r}, dynamic {d.get(k)!r}" for k in SCHEDULE_KEYS if b.get(k) != d.get(k)]


def cuda_visible() -> bool:
    """Whether this host shows a CUDA device, without importing torch (it takes seconds): a
    non-empty ``CUDA_VISIBLE_DEVICES`` other than ``-1``, else an ``/dev/nvidia<N>`` device node.
    The workflow uses it to decide whether ``device: auto`` rules claim the ``gpu`` resource."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return env.strip() not in ("", "-1")
    return any(Path("/dev").glob("nvidia[0-9]*"))


# Repeated seg-training runs (config `repeats`): run 0 has no suffix, run r > 0 the suffix "-r<r>"
# on its model, prediction and score names (seg_K0-r1.pt, miou-r1.json).
REP_PATTERN = r"(?:-r[1-9]\d*)?"


def rep_suffix(r: int) -> str:
    """The name suffix of run ``r`` (0-based): "" for run 0, "-r<r>" after.

    Raises:
        ValueError: negative ``r``.
    """
    if r < 0:
        raise ValueError(f"run index {r} < 0")
    return f"-r{r}" if r else ""


def split_rep(name: str) -> tuple[str, int]:
    """A model, score tag or run suffix split into its base and run index:
    "seg_K0-r2" → ("seg_K0", 2), "dynamic" → ("dynamic", 0), "-r1" → ("", 1), "" → ("", 0)."""
    m = re.fullmatch(rf"(.*?)({REP_PATTERN})", name)
    base, suffix = m.group(1), m.group(2)
    return base, int(suffix[2:]) if suffix else 0
