"""Logging for pipeline jobs: one log file per rule (Snakemake ``log:``), errors recorded there."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path


@contextlib.contextmanager
def logged(path: str | None, name: str = "ssdd"):
    """Send the ``ssdd`` logger (and warnings) to ``path`` and stderr for the duration of a job.

    Any exception is logged with its traceback before it propagates, so the rule's log file
    says why the job failed.
    """
    root = logging.getLogger(name)
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="a"))
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").handlers = handlers
    t0 = time.time()
    try:
        yield root
        root.info("done in %.1f s", time.time() - t0)
    except BaseException:
        root.exception("job failed after %.1f s", time.time() - t0)
        raise
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
