"""A toy stage's work for the runner's tests, in a module of its own: worker processes import it to
unpickle a task, and a light module keeps that import from skewing the timing the tests check."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def toy_work(params, point, store) -> None:
    """A toy stage's work: one stored artifact per point, logging when it ran and with how many threads."""
    import torch

    def compute(out: Path, scratch: Path) -> None:
        start = time.time()
        time.sleep(1.0)
        entry = {"point": [point["bias_type"], point["ratio"]], "start": start, "end": time.time(),
                 "threads": torch.get_num_threads(), "pid": os.getpid()}
        with open(os.environ["TOY_LOG"], "a") as handle:
            handle.write(json.dumps(entry) + "\n")
        (out / "value.txt").write_text(str(point))

    store.get_or_compute("toy", dict(point), compute)
