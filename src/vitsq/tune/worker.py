"""A local trial worker: ``python -m vitsq.tune.worker SPEC.pkl REFERENCE.pkl OUT.json``.

The driver (:class:`vitsq.tune.runner.LocalExecutor`) starts one process per trial attempt with
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to the trial's thread count before torch loads, so a
trial never runs on more threads than it asks for, and a crash (segfault, out of memory) takes
down only this attempt. The pickles are written by the driver for this process only. The result
is written to a temporary sibling and renamed, so the driver reads a whole file or none.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m vitsq.tune.worker SPEC.pkl REFERENCE.pkl OUT.json", file=sys.stderr)
        return 2
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from vitsq.tune.trial import run_trial

    spec = pickle.loads(Path(argv[0]).read_bytes())
    reference = pickle.loads(Path(argv[1]).read_bytes())
    record = run_trial(spec, reference)
    out = Path(argv[2])
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, default=str), encoding="utf-8")
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a subprocess
    sys.exit(main(sys.argv[1:]))
